-- A Telegram chat belongs to one account: earlier duplicates keep the
-- oldest account's link, and the bot moves a chat when its owner links it
-- to another account.
UPDATE users SET telegram_chat_id = NULL
 WHERE telegram_chat_id IS NOT NULL
   AND id NOT IN (SELECT MIN(id) FROM users WHERE telegram_chat_id IS NOT NULL GROUP BY telegram_chat_id);
DROP INDEX IF EXISTS users_telegram_chat_id;
CREATE UNIQUE INDEX IF NOT EXISTS users_telegram_chat_id_unique ON users (telegram_chat_id)
 WHERE telegram_chat_id IS NOT NULL;
