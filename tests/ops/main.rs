//! Operability files checked by the tools that will read them (installed by
//! scripts/ops-tools.sh): Prometheus config, rules and rule unit tests
//! (promtool), the compose file (docker-compose config), the Kubernetes
//! manifests (kubernetes-validate); every metric a dashboard or rule uses
//! is exported by a running all-in-one platform; and a real Prometheus
//! finds and scrapes every instance through the registry's discovery.

// The e2e suite's platform helpers; this suite uses only some of them.
#[allow(dead_code)]
#[path = "../e2e/helpers.rs"]
mod helpers;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use helpers::{WAIT, spawn_app_with};
use serde_json::Value;
use tokio::time::Instant;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tool`'s path, or `None` (skip) when it is not installed; under CI a
/// missing tool fails the test.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "{name} missing: run scripts/ops-tools.sh");
        eprintln!("skipped: {name} missing (scripts/ops-tools.sh installs it)");
    }
    found
}

/// Runs `program args` in `dir`; fails the test with its output unless it
/// succeeds.
fn succeeds(program: &Path, args: &[&str], dir: &Path) -> String {
    let output = Command::new(program).args(args).current_dir(dir).output().expect("tool runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{} {args:?} failed:\n{text}", program.display());
    text
}

#[test]
fn prometheus_config_rules_and_rule_unit_tests_pass_promtool() {
    let Some(promtool) = tool("promtool") else { return };
    let dir = root().join("compose/prometheus");
    succeeds(&promtool, &["check", "config", "--syntax-only", "prometheus.yml"], &dir);
    let rules = succeeds(&promtool, &["check", "rules", "rules/lizards.yml"], &dir);
    assert!(rules.contains("SUCCESS: 10 rules found"), "{rules}");
    // Every alert has a test that makes it fire.
    let tests = std::fs::read_to_string(dir.join("tests/lizards_test.yml")).unwrap();
    for alert in alert_names() {
        assert!(tests.contains(&format!("alertname: {alert}")), "no unit test fires {alert}");
    }
    succeeds(&promtool, &["test", "rules", "tests/lizards_test.yml"], &dir);
}

#[test]
fn the_compose_file_is_valid() {
    let Some(compose) = tool("docker-compose") else { return };
    let dir = root().join("compose");
    let services = succeeds(&compose, &["-f", "docker-compose.yml", "config", "--services"], &dir);
    let services: BTreeSet<&str> = services.lines().collect();
    let expected = [
        "registry",
        "ingestion",
        "provider",
        "notifier",
        "gateway",
        "rabbitmq",
        "postgres",
        "redis",
        "mongo",
        "mailpit",
        "prometheus",
        "alertmanager",
        "grafana",
    ];
    for service in expected {
        assert!(services.contains(service), "no {service} in {services:?}");
    }
    succeeds(&compose, &["-f", "docker-compose.yml", "config", "-q"], &dir);
}

#[test]
fn the_kubernetes_manifests_validate_against_the_schemas() {
    let Some(validate) = tool("kubernetes-validate") else { return };
    let dir = root().join("k8s");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    files.sort();
    let mut args = vec!["--strict"];
    args.extend(files.iter().map(String::as_str));
    let report = succeeds(&validate, &args, &dir);
    for kind in ["deployment/lizards-provider", "service/gateway", "ingress/lizards", "configmap/lizards-config"] {
        assert!(report.contains(kind), "{kind} not validated:\n{report}");
    }
}

fn alert_names() -> Vec<String> {
    let rules = std::fs::read_to_string(root().join("compose/prometheus/rules/lizards.yml")).unwrap();
    rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).map(str::to_string).collect()
}

/// Every `lizards_*` metric named in the dashboards and the rules (series
/// of recording rules, `lizards:...`, are Prometheus's own).
fn referenced_metrics() -> BTreeSet<String> {
    let mut texts = vec![std::fs::read_to_string(root().join("compose/prometheus/rules/lizards.yml")).unwrap()];
    for entry in std::fs::read_dir(root().join("grafana/dashboards")).unwrap() {
        let board: Value = serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        for panel in board["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                texts.push(target["expr"].as_str().unwrap().to_string());
            }
        }
    }
    let mut names = BTreeSet::new();
    for text in texts {
        let mut rest = text.as_str();
        while let Some(start) = rest.find("lizards_") {
            let name: String = rest[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            rest = &rest[start + name.len()..];
            names.insert(name);
        }
    }
    names
}

#[tokio::test]
async fn every_metric_used_by_a_dashboard_or_rule_is_exported() {
    // A web source (pointed nowhere: it need not answer) exports the
    // fetch and breaker series the synthetic source has no use for.
    let app = spawn_app_with(|config| {
        config.ingestion.sources = vec!["synthetic".into(), "stooq".into()];
        config.ingestion.stooq_url = "http://127.0.0.1:9/".into();
        config.registry.slo_interval = Duration::from_millis(100);
    })
    .await;
    // An SLO, evaluated once, exports the per-SLO series.
    let slo = serde_json::json!({"name": "up", "metric": "lizards_ws_connections", "aggregation": "value",
        "comparison": ">", "threshold": -1, "window_minutes": 5});
    let admin = app.admin_token().await;
    assert_eq!(app.http.post(app.url("/slos")).bearer_auth(&admin).json(&slo).send().await.unwrap().status(), 201);
    let status = app.url("/slos/status");
    wait_for("the SLO's first evaluation", WAIT * 3, async || {
        let body: Value = app.http.get(&status).send().await.ok()?.json().await.ok()?;
        (body["met"] == 1).then_some(())
    })
    .await;
    let platform = app.platform.as_ref().unwrap();
    let roles = [platform.registry, platform.ingestion, platform.provider, platform.gateway, platform.notifier];
    let mut exported = BTreeSet::new();
    for addr in roles.into_iter().map(|a| a.expect("every role runs")) {
        let text = app.http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap();
            exported.insert(name.to_string());
            for suffix in ["_bucket", "_sum", "_count"] {
                exported.insert(format!("{name}{suffix}"));
            }
        }
    }
    let missing: Vec<_> = referenced_metrics().into_iter().filter(|m| !exported.contains(m)).collect();
    assert!(missing.is_empty(), "used by dashboards or rules, not exported: {missing:?}");
    app.stop().await;
}

#[tokio::test]
async fn prometheus_scrapes_every_instance_found_through_the_registry() {
    let Some(prometheus) = tool("prometheus") else { return };
    // Held until Prometheus starts: a port freed at once was at times taken
    // by one of the platform's own listeners (port 0) before Prometheus
    // could bind it, and the test then waited on the wrong server.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = reserved.local_addr().unwrap().port();
    // The SLO manager queries this Prometheus.
    let app = spawn_app_with(|config| {
        config.registry.prometheus_url = Some(format!("http://127.0.0.1:{port}"));
        config.registry.slo_interval = Duration::from_millis(500);
    })
    .await;
    let registry = app.platform.as_ref().unwrap().registry.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "global: {{ scrape_interval: 1s }}\n\
         scrape_configs:\n  - job_name: lizards\n    honor_labels: true\n    http_sd_configs:\n      \
         - url: http://{registry}/prometheus/targets\n        refresh_interval: 1s\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let log_path = dir.path().join("prometheus.log");
    let log = std::fs::File::create(&log_path).unwrap();
    drop(reserved);
    let mut server = KillOnDrop(
        Command::new(prometheus)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts"),
    );

    let services: BTreeSet<String> =
        ["registry", "ingestion", "provider", "gateway", "notifier"].map(String::from).into();
    let deadline = Instant::now() + WAIT * 3;
    let targets = format!("http://127.0.0.1:{port}/api/v1/targets?state=active");
    loop {
        let up: Option<BTreeSet<String>> = async {
            let body: Value = app.http.get(&targets).send().await.ok()?.json().await.ok()?;
            let active = body["data"]["activeTargets"].as_array()?.clone();
            let healthy = active.iter().filter(|t| t["health"] == "up");
            Some(healthy.filter_map(|t| t["labels"]["service"].as_str().map(str::to_string)).collect())
        }
        .await;
        if up.as_ref() == Some(&services) {
            break;
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("prometheus exited ({status}): {}", std::fs::read_to_string(&log_path).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "targets up: {up:?}, expected {services:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // And the platform's own series are queryable there.
    let query = format!("http://127.0.0.1:{port}/api/v1/query?query=lizards_ws_connections");
    wait_for("lizards_ws_connections in Prometheus", WAIT, async || {
        let body: Value = app.http.get(&query).send().await.unwrap().json().await.unwrap();
        body["data"]["result"].as_array().is_some_and(|r| !r.is_empty()).then_some(())
    })
    .await;

    // SLOs on end-to-end latency, evaluated from Prometheus: a client
    // streams prices, so the latency histogram fills.
    let mut client = app.ws("/ws").await;
    client.send(serde_json::json!({"type": "subscribe", "symbols": ["AAPL", "MSFT"]})).await;
    let slo = |name: &str, threshold: f64| {
        serde_json::json!({"name": name, "metric": "lizards_e2e_latency_seconds", "aggregation": "p99",
            "comparison": "<", "threshold": threshold, "window_minutes": 5})
    };
    let mut ids = Vec::new();
    let admin = app.admin_token().await;
    for body in [slo("e2e p99 under 1 s", 1.0), slo("e2e p99 under 1 ns", 1e-9)] {
        let created = app.http.post(app.url("/slos")).bearer_auth(&admin).json(&body).send().await.unwrap();
        assert_eq!(created.status(), 201);
        ids.push(created.json::<Value>().await.unwrap()["id"].clone());
    }
    let status = app.url("/slos/status");
    let report = wait_for("both SLOs judged from Prometheus", WAIT * 3, async || {
        while client.recv_within(Duration::from_millis(10)).await.is_some() {}
        let body: Value = app.http.get(&status).send().await.ok()?.json().await.ok()?;
        (body["met"] == 1 && body["violated"] == 1).then_some(body)
    })
    .await;
    assert_eq!(report["status"], "violated");
    let met = report["slos"].as_array().unwrap().iter().find(|s| s["id"] == ids[0]).unwrap();
    assert_eq!(met["status"], "met");
    let p99 = met["value"].as_f64().expect("a p99 from Prometheus");
    assert!(p99 > 0.0 && p99 < 1.0, "{p99}");
    let violations = app.url(&format!("/slos/{}/violations?hours=1", ids[1]));
    let violations: Value = app.http.get(&violations).send().await.unwrap().json().await.unwrap();
    assert_eq!(violations["count"], 1, "{violations}");
    assert_eq!(violations["violations"][0]["ongoing"], true);
    app.stop().await;
}

/// Polls `check` until it gives a value, failing after `within`.
async fn wait_for<T>(what: &str, within: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn every_service_documents_its_routes_and_the_gateway_merges_what_it_routes() {
    let app = spawn_app_with(|_| {}).await;
    let platform = app.platform.as_ref().unwrap();
    let validator = tool("openapi-spec-validator");
    let dir = tempfile::tempdir().unwrap();
    let roles = [
        ("registry", platform.registry),
        ("ingestion", platform.ingestion),
        ("provider", platform.provider),
        ("notifier", platform.notifier),
        ("gateway", platform.gateway),
    ];
    let mut merged = Value::Null;
    for (role, addr) in roles {
        let base = format!("http://{}", addr.expect("every role runs"));
        let response = app.http.get(format!("{base}/openapi.json")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{role}");
        assert_eq!(response.headers()["content-type"], "application/json", "{role}");
        let document: Value = response.json().await.unwrap();
        assert_eq!(document["openapi"], "3.1.0", "{role}");
        assert!(document["paths"].get("/healthz").is_some(), "{role} documents /healthz");
        if let Some(validator) = &validator {
            let file = dir.path().join(format!("{role}.json"));
            std::fs::write(&file, document.to_string()).unwrap();
            succeeds(validator, &[file.to_str().unwrap()], dir.path());
        }
        if role == "gateway" {
            merged = document;
            continue;
        }
        // Every documented operation is served: no 404 without a problem
        // document (no route at all) and no 405.
        for (path, item) in document["paths"].as_object().unwrap() {
            if path == "/ws" {
                continue;
            }
            let concrete = path
                .replace("{symbol}", "AAPL")
                .replace("{service_id}", "provider")
                .replace("{instance_id}", "no-such-instance")
                .replace("{id}", "999999");
            for method in item.as_object().unwrap().keys() {
                let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
                let request = app.http.request(method.clone(), format!("{base}{concrete}"));
                let request = if ["POST", "PUT", "PATCH"].contains(&method.as_str()) {
                    request.header("content-type", "application/json").body("{}")
                } else {
                    request
                };
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let problem = response.headers().get("content-type").is_some_and(|t| t == "application/problem+json");
                assert!(
                    status != 405 && (status != 404 || problem),
                    "{role}: {method} {path} is not served ({status})"
                );
            }
        }
    }
    // The gateway's document: what it routes, with the methods it routes.
    let paths = merged["paths"].as_object().unwrap();
    for path in ["/", "/quotes/{symbol}", "/portfolio/orders", "/sources", "/ingest", "/services", "/slos/status"] {
        assert!(paths.contains_key(path), "the gateway does not document {path}");
    }
    assert!(paths["/services/{service_id}"].get("get").is_some());
    assert!(paths["/services/{service_id}"].get("post").is_none(), "registrations go to the registry itself");
    assert!(!paths.contains_key("/prometheus/targets"), "not routed by the gateway");
    assert!(merged["components"]["schemas"].get("Portfolio").is_some());
    assert!(merged["info"].get("x-lizards-unavailable").is_none(), "{}", merged["info"]);
    app.stop().await;
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
