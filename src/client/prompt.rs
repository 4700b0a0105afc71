//! Questions on the terminal: a line of input, or a password without echo.

use std::io::{IsTerminal, Write};

use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

pub struct Prompt {
    lines: Lines<BufReader<Stdin>>,
}

impl Prompt {
    pub fn new() -> Prompt {
        Prompt { lines: BufReader::new(tokio::io::stdin()).lines() }
    }

    /// The answer, trimmed, or `None` at the end of the input.
    pub async fn ask(&mut self, question: &str) -> Option<String> {
        self.line(question).await.map(|line| line.trim().to_string())
    }

    async fn line(&mut self, question: &str) -> Option<String> {
        print!("{question}");
        let _ = std::io::stdout().flush();
        self.lines.next_line().await.ok().flatten()
    }

    /// Like [`Prompt::ask`], without echoing what is typed on a terminal.
    pub async fn secret(&mut self, question: &str) -> Option<String> {
        let terminal = std::io::stdin().is_terminal();
        if terminal {
            stty("-echo");
        }
        // Not trimmed: spaces may be part of a password.
        let answer = self.line(question).await;
        if terminal {
            stty("echo");
            println!();
        }
        answer
    }
}

fn stty(setting: &str) {
    // Best effort: without stty the password is echoed, which is still usable.
    let _ = std::process::Command::new("stty").arg(setting).stdin(std::process::Stdio::inherit()).status();
}
