//! A GraphQL-over-HTTP client for load: one shared connection pool, a per-request
//! timeout, and answers sorted into data, GraphQL errors, and transport failures.

use std::time::Duration;

use serde_json::{Value, json};

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
}

/// What one request came back with.
#[derive(Debug)]
pub enum Answer {
    Data(Value),
    /// HTTP 200 (or 4xx) with `errors`: `code` is the first error's `extensions.code`.
    Errors {
        code: String,
        retryable: bool,
        body: Value,
    },
    /// No GraphQL answer at all: timeout, connection error, non-JSON body.
    Transport(String),
}

impl Answer {
    pub fn is_ok(&self) -> bool {
        matches!(self, Answer::Data(_))
    }

    /// A timeout, a dropped connection, an error the gateway marked retryable,
    /// INTERNAL (what the gateway answers when its own upstream call timed out), or a
    /// refusal to take more work now (RATE_LIMITED, SERVICE_BUSY): the client sends the
    /// same request (same idempotency key) again, which is what the key is for.
    pub fn worth_retrying(&self) -> bool {
        match self {
            Answer::Data(_) => false,
            Answer::Errors { retryable, code, .. } => {
                *retryable || matches!(code.as_str(), "RATE_LIMITED" | "SERVICE_BUSY" | "INTERNAL")
            }
            Answer::Transport(_) => true,
        }
    }

    /// A short label for error tallies.
    pub fn label(&self) -> String {
        match self {
            Answer::Data(_) => "OK".to_owned(),
            Answer::Errors { code, .. } => code.clone(),
            Answer::Transport(reason) => format!("TRANSPORT({reason})"),
        }
    }
}

impl Client {
    pub fn new(url: String, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { http, url })
    }

    pub async fn send(&self, token: Option<&str>, query: &str, variables: Value) -> Answer {
        let mut request = self.http.post(&self.url).json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) if error.is_timeout() => return Answer::Transport("timeout".to_owned()),
            Err(error) if error.is_connect() => return Answer::Transport("connect".to_owned()),
            Err(_) => return Answer::Transport("request".to_owned()),
        };
        let status = response.status();
        let body: Value = match response.json().await {
            Ok(body) => body,
            Err(error) if error.is_timeout() => return Answer::Transport("timeout".to_owned()),
            Err(_) => return Answer::Transport(format!("HTTP {} without JSON", status.as_u16())),
        };
        if let Some(first) = body.get("errors").and_then(|e| e.get(0)) {
            let extensions = first.get("extensions");
            let code = extensions
                .and_then(|x| x.get("code"))
                .and_then(Value::as_str)
                .unwrap_or("NO_CODE")
                .to_owned();
            let retryable =
                extensions.and_then(|x| x.get("retryable")).and_then(Value::as_bool) == Some(true);
            return Answer::Errors { code, retryable, body };
        }
        match body.get("data") {
            Some(data) if status.is_success() && !data.is_null() => Answer::Data(data.clone()),
            _ => Answer::Transport(format!("HTTP {} without data", status.as_u16())),
        }
    }
}
