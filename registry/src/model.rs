//! The registry's domain values, parsed once at the HTTP edge: the core
//! never sees a raw `String` port or protocol. A registration body is read
//! as a `serde_json::Value` so that every bad field is reported at once,
//! not just the first one serde would trip over.

use std::{borrow::Borrow, collections::BTreeMap, fmt, net::IpAddr, time::Duration};

use serde::Serialize;
use serde_json::{Map, Value};

/// Longest display name accepted.
const MAX_NAME_CHARS: usize = 200;
/// Longest health-check path accepted.
const MAX_PATH_CHARS: usize = 1024;
/// Allowed `ttl_seconds` range: at least one second, at most an hour.
const TTL_SECONDS: std::ops::RangeInclusive<u64> = 1..=3600;

/// One bad field of a request, as listed in the problem's `errors` member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// The key the gateway routes by: `[A-Za-z0-9._-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId(String);

impl ServiceId {
    pub fn parse(text: &str) -> Result<ServiceId, String> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if text.is_empty() || text.len() > 64 {
            return Err("must be 1 to 64 characters long".to_string());
        }
        if !text.chars().all(allowed) {
            return Err("may only contain letters, digits, '.', '_' and '-'".to_string());
        }
        Ok(ServiceId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by `ServiceId` be queried with a plain `&str`.
impl Borrow<str> for ServiceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an instance listens: an IP literal or an RFC 1123 host name, kept
/// in canonical form (compressed IPv6, lower-case names) so that the same
/// address registered twice compares equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Host(String);

impl Host {
    pub fn parse(text: &str) -> Result<Host, String> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Host(ip.to_string()));
        }
        if is_hostname(text) {
            return Ok(Host(text.to_ascii_lowercase()));
        }
        Err(format!("'{text}' is neither an IP address nor a valid host name"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `host:port`, bracketing IPv6 literals as URLs and Prometheus expect.
    pub fn authority(&self, port: Port) -> String {
        if self.0.contains(':') { format!("[{}]:{port}", self.0) } else { format!("{}:{port}", self.0) }
    }
}

/// RFC 1123 host name. A numeric last label is refused so that a mistyped
/// IPv4 address such as `10.0.1.300` is not taken for a name.
fn is_hostname(text: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let last_is_numeric = text.rsplit('.').next().is_some_and(|label| label.chars().all(|c| c.is_ascii_digit()));
    text.len() <= 253 && text.split('.').all(label_ok) && !last_is_numeric
}

/// A TCP/UDP port, 1–65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Port(u16);

impl Port {
    /// Accepts a JSON number or a string of digits.
    pub fn parse(value: &Value) -> Result<Port, String> {
        let number = match value {
            Value::Number(n) => n.as_u64().ok_or_else(|| format!("{n} is not a whole number"))?,
            Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse::<u64>().map_err(|_| format!("'{s}' is out of range"))?
            }
            Value::String(s) => return Err(format!("'{s}' is not a number")),
            _ => return Err("must be a number or a string of digits".to_string()),
        };
        match u16::try_from(number) {
            Ok(port) if port != 0 => Ok(Port(port)),
            _ => Err(format!("{number} is outside 1-65535")),
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Http,
    Https,
    Ws,
    Grpc,
}

impl Protocol {
    const ALL: [Protocol; 6] =
        [Protocol::Tcp, Protocol::Udp, Protocol::Http, Protocol::Https, Protocol::Ws, Protocol::Grpc];

    /// Case-insensitive.
    pub fn parse(text: &str) -> Result<Protocol, String> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| format!("'{text}' is not one of TCP, UDP, HTTP, HTTPS, WS, GRPC"))
    }

    /// Upper-case, as stored and returned.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
            Protocol::Ws => "WS",
            Protocol::Grpc => "GRPC",
        }
    }

    /// The URL scheme an HTTP health probe uses, if this protocol has one.
    pub fn probe_scheme(self) -> Option<&'static str> {
        match self {
            Protocol::Http => Some("http"),
            Protocol::Https => Some("https"),
            _ => None,
        }
    }
}

/// Path probed by the active health check; starts with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPath(String);

impl HealthPath {
    pub fn parse(text: &str) -> Result<HealthPath, String> {
        if !text.starts_with('/') {
            return Err("must start with '/'".to_string());
        }
        if text.len() > MAX_PATH_CHARS || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("must be at most {MAX_PATH_CHARS} characters without spaces"));
        }
        Ok(HealthPath(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Result of the latest active health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Passing,
    Critical,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Critical => "critical",
        }
    }
}

/// A valid `POST /services/{service-id}` request.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub service_id: ServiceId,
    pub name: String,
    pub host: Host,
    pub port: Port,
    pub protocol: Protocol,
    pub health_check_path: Option<HealthPath>,
    pub ttl: Duration,
    pub metadata: BTreeMap<String, String>,
}

impl Registration {
    /// Parses the path's service id and the JSON body together, so the 400
    /// names every bad field of both. `default_ttl` applies when the body
    /// has no `ttl_seconds`.
    pub fn parse(service_id: &str, body: &[u8], default_ttl: Duration) -> Result<Registration, Vec<FieldError>> {
        let mut errors = Errors::default();
        let service_id = errors.check("service_id", ServiceId::parse(service_id));
        let fields = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => return Err(errors.finish_with("body", "must be a JSON object")),
            Err(error) => {
                return Err(errors.finish_with("body", format!("is not valid JSON: {error}")));
            }
        };
        let body = Body(&fields);
        let name = errors.check("name", body.required("name").and_then(parse_name));
        let host = errors.check("ip_address", body.required_str("ip_address").and_then(Host::parse));
        let port = errors.check("port_number", body.required("port_number").and_then(Port::parse));
        let protocol = errors.check("protocol", body.required_str("protocol").and_then(Protocol::parse));
        let health_check_path =
            errors.check("health_check_path", body.optional_str("health_check_path", HealthPath::parse));
        let ttl = errors.check("ttl_seconds", body.optional("ttl_seconds", parse_ttl));
        let metadata = errors.check("metadata", body.optional("metadata", parse_metadata));
        match (service_id, name, host, port, protocol, health_check_path, ttl, metadata) {
            (
                Some(service_id),
                Some(name),
                Some(host),
                Some(port),
                Some(protocol),
                Some(health_check_path),
                Some(ttl),
                Some(metadata),
            ) => Ok(Registration {
                service_id,
                name,
                host,
                port,
                protocol,
                health_check_path,
                ttl: ttl.unwrap_or(default_ttl),
                metadata: metadata.unwrap_or_default(),
            }),
            _ => Err(errors.0),
        }
    }
}

/// Collects field errors while parsing continues past the first one.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.0.push(FieldError::new(field, message))).ok()
    }

    fn finish_with(mut self, field: &str, message: impl Into<String>) -> Vec<FieldError> {
        self.0.push(FieldError::new(field, message));
        self.0
    }
}

/// Field access on a JSON object body; `null` counts as absent.
struct Body<'a>(&'a Map<String, Value>);

impl<'a> Body<'a> {
    fn get(&self, field: &str) -> Option<&'a Value> {
        self.0.get(field).filter(|value| !value.is_null())
    }

    fn required(&self, field: &str) -> Result<&'a Value, String> {
        self.get(field).ok_or_else(|| "is required".to_string())
    }

    fn required_str(&self, field: &str) -> Result<&'a str, String> {
        self.required(field)?.as_str().ok_or_else(|| "must be a string".to_string())
    }

    fn optional<T>(&self, field: &str, parse: impl FnOnce(&Value) -> Result<T, String>) -> Result<Option<T>, String> {
        self.get(field).map(parse).transpose()
    }

    fn optional_str<T>(&self, field: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<Option<T>, String> {
        self.optional(field, |value| value.as_str().ok_or_else(|| "must be a string".to_string()).and_then(parse))
    }
}

fn parse_name(value: &Value) -> Result<String, String> {
    let name = value.as_str().ok_or_else(|| "must be a string".to_string())?;
    if name.trim().is_empty() {
        return Err("must not be empty".to_string());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("must be at most {MAX_NAME_CHARS} characters"));
    }
    Ok(name.to_string())
}

fn parse_ttl(value: &Value) -> Result<Duration, String> {
    match value.as_u64() {
        Some(seconds) if TTL_SECONDS.contains(&seconds) => Ok(Duration::from_secs(seconds)),
        _ => Err(format!("must be a whole number of seconds in {}-{}", TTL_SECONDS.start(), TTL_SECONDS.end())),
    }
}

fn parse_metadata(value: &Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(entries) = value else {
        return Err("must be an object of string values".to_string());
    };
    entries
        .iter()
        .map(|(key, value)| match value {
            Value::String(text) => Ok((key.clone(), text.clone())),
            _ => Err(format!("value of '{key}' must be a string")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TTL: Duration = Duration::from_secs(30);

    fn parse(body: Value) -> Result<Registration, Vec<FieldError>> {
        Registration::parse("svc-a", body.to_string().as_bytes(), TTL)
    }

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn seed_body_parses_with_defaults() {
        let body = json!({"name":"Service A","ip_address":"10.0.1.7","port_number":"8042","protocol":"tcp"});
        let registration = parse(body).expect("valid");
        assert_eq!(registration.port.get(), 8042);
        assert_eq!(registration.protocol, Protocol::Tcp);
        assert_eq!(registration.ttl, TTL);
        assert!(registration.metadata.is_empty());
    }

    #[test]
    fn every_bad_field_is_reported() {
        let body = json!({"name":"","ip_address":"10.0.1.300","port_number":0,"protocol":"SCTP",
            "health_check_path":"health","ttl_seconds":0,"metadata":{"a":1}});
        let errors = Registration::parse("bad id!", body.to_string().as_bytes(), TTL).expect_err("invalid");
        assert_eq!(
            fields(errors),
            [
                "service_id",
                "name",
                "ip_address",
                "port_number",
                "protocol",
                "health_check_path",
                "ttl_seconds",
                "metadata"
            ]
        );
    }

    #[test]
    fn hosts_are_ip_literals_or_rfc1123_names() {
        assert_eq!(Host::parse("::0001").expect("ipv6").as_str(), "::1");
        assert_eq!(Host::parse("Quotes-1.Internal").expect("name").as_str(), "quotes-1.internal");
        for bad in ["", "-a", "a-", "a..b", "under_score", "10.0.0.256", "has space", &"a".repeat(64)] {
            assert!(Host::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn ports_accept_numbers_and_digit_strings_in_range() {
        assert_eq!(Port::parse(&json!(1)).map(Port::get), Ok(1));
        assert_eq!(Port::parse(&json!("65535")).map(Port::get), Ok(65535));
        for bad in [json!(0), json!(65536), json!("abc"), json!("-1"), json!(80.5), json!(true), json!("")] {
            assert!(Port::parse(&bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn service_ids_follow_the_allowed_alphabet() {
        assert!(ServiceId::parse("quotes.v1_a-b").is_ok());
        assert!(ServiceId::parse("").is_err());
        assert!(ServiceId::parse(&"a".repeat(65)).is_err());
        assert!(ServiceId::parse("a/b").is_err());
    }

    #[test]
    fn non_object_body_is_reported_as_body() {
        let errors = Registration::parse("svc", b"[1]", TTL).expect_err("invalid");
        assert_eq!(fields(errors), ["body"]);
        let errors = Registration::parse("svc", b"{not json", TTL).expect_err("invalid");
        assert_eq!(fields(errors), ["body"]);
    }
}
