//! Webhook delivery over HTTP: one event per POST, signed with HMAC-SHA256 of the body
//! (`X-Roster-Signature: sha256=<hex>`), named (`X-Roster-Event`) and identified
//! (`X-Roster-Delivery`, the event id receivers deduplicate on). Any answer but 2xx, and a
//! timeout, count as failures for the outbox to retry.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{Secret, WebhookTarget};

/// How long a receiver may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct WebhookSender {
    client: reqwest::Client,
    url: String,
    secret: Secret,
}

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn signature(secret: &[u8], body: &[u8]) -> Result<String, String> {
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret).map_err(|e| e.to_string())?;
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    Ok(format!("sha256={}", hex::encode(tag)))
}

impl WebhookSender {
    pub fn new(target: &WebhookTarget) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            // A receiver's redirect would resend signed events somewhere unconfigured.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Roster-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("WEBHOOK_URL: cannot build an HTTP client: {e}"))?;
        Ok(Self {
            client,
            url: target.url.clone(),
            secret: target.secret.clone(),
        })
    }

    /// Posts one event (`body` is its JSON, `action` and `id` taken from it).
    pub async fn post(&self, body: &str) -> Result<(), String> {
        let event: serde_json::Value =
            serde_json::from_str(body).map_err(|e| format!("unreadable event: {e}"))?;
        let action = event["action"].as_str().unwrap_or_default().to_string();
        let id = event["id"].as_i64().unwrap_or_default().to_string();
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                "X-Roster-Signature",
                signature(self.secret.expose().as_bytes(), body.as_bytes())?,
            )
            .header("X-Roster-Event", action)
            .header("X-Roster-Delivery", id)
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| match e.is_timeout() {
                true => format!("no answer within {} s", TIMEOUT.as_secs()),
                false => format!("cannot reach the receiver: {e}"),
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {status}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2.
    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?").unwrap(),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
