//! HTTP hygiene shared by every outbound call: the URL policy, the client settings and
//! a bounded exchange (deadline over the whole exchange, body cap while reading, no
//! redirects).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use reqwest::header::{HeaderMap, LOCATION};
use reqwest::{StatusCode, Url};
use zeroize::Zeroizing;

use crate::error::{BuildError, FetchError};

pub(crate) const USER_AGENT: &str = concat!("jwkd-client/", env!("CARGO_PKG_VERSION"));

/// Settings every builder in the crate shares.
#[derive(Clone, Debug)]
pub(crate) struct HttpSettings {
    pub(crate) allow_http: bool,
    pub(crate) timeout: Duration,
    pub(crate) root_certificates: Vec<Vec<u8>>,
    pub(crate) client: Option<reqwest::Client>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            allow_http: false,
            timeout: Duration::from_secs(5),
            root_certificates: Vec::new(),
            client: None,
        }
    }
}

impl HttpSettings {
    /// The client: the caller's, or one with no redirects, the deadline, and the extra roots.
    pub(crate) fn client(&self) -> Result<reqwest::Client, BuildError> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .user_agent(USER_AGENT)
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(2)));
        for pem in &self.root_certificates {
            let certificates = reqwest::Certificate::from_pem_bundle(pem).map_err(|err| {
                BuildError::InvalidCertificate {
                    reason: err.to_string(),
                }
            })?;
            if certificates.is_empty() {
                return Err(BuildError::InvalidCertificate {
                    reason: "no certificate in the PEM data".into(),
                });
            }
            builder = builder.tls_certs_merge(certificates);
        }
        builder.build().map_err(|err| BuildError::HttpClient {
            reason: error_chain(&err),
        })
    }

    pub(crate) fn check_timeout(&self) -> Result<(), BuildError> {
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return Err(BuildError::InvalidOption {
                name: "timeout",
                reason: format!("{:?} is outside (0, 60 s]", self.timeout),
            });
        }
        Ok(())
    }
}

/// The setters every builder has for its [`HttpSettings`], written once so that the
/// builders cannot drift apart. The argument is the path from the builder to its
/// settings (`options.http`, `endpoint.http`).
macro_rules! http_setters {
    ($($settings:ident).+) => {
        /// Accepts `http` URLs on non-loopback hosts. Only for a network where
        /// transport security is provided otherwise. Defaults to false; loopback
        /// `http` is always allowed.
        pub fn allow_http(mut self, allow: bool) -> Self {
            self.$($settings).+.allow_http = allow;
            self
        }

        /// Deadline for one whole exchange: connect, headers and body. At most 60 s.
        /// Defaults to 5 s.
        pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
            self.$($settings).+.timeout = timeout;
            self
        }

        /// Trusts the certificates of this PEM bundle in addition to the platform
        /// roots (for a jwkd behind a private CA). May be called more than once.
        pub fn root_certificates_pem(mut self, pem: &[u8]) -> Self {
            self.$($settings).+.root_certificates.push(pem.to_vec());
            self
        }

        /// Uses this HTTP client instead of building one. The URL policy, the deadline
        /// and the body cap still apply, and an answer from any URL other than the one
        /// asked is refused; timeouts, proxies and TLS settings are the client's.
        pub fn http_client(mut self, client: reqwest::Client) -> Self {
            self.$($settings).+.client = Some(client);
            self
        }
    };
}

pub(crate) use http_setters;

/// What the builders of the credentialed clients ([`TokenSource`](crate::TokenSource),
/// [`SigningKeySource`](crate::SigningKeySource)) are first given: the endpoint, the
/// client's credentials, and the HTTP settings.
pub(crate) struct Endpoint {
    pub(crate) url: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: Zeroizing<String>,
    pub(crate) http: HttpSettings,
}

impl Endpoint {
    pub(crate) fn new(
        url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Endpoint {
        Endpoint {
            url: url.into(),
            client_id: client_id.into(),
            client_secret: Zeroizing::new(client_secret.into()),
            http: HttpSettings::default(),
        }
    }

    /// Checks the deadline and the URL policy, and returns the parsed URL.
    pub(crate) fn url(&self) -> Result<Url, BuildError> {
        self.http.check_timeout()?;
        parse_url(&self.url, self.http.allow_http)
    }

    /// The `Debug` of a builder holding this endpoint: never the secret.
    pub(crate) fn debug_builder(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Parses a URL a builder was given and applies the scheme policy.
pub(crate) fn parse_url(url: &str, allow_http: bool) -> Result<Url, BuildError> {
    let parsed = Url::parse(url).map_err(|err| BuildError::InvalidUrl {
        url: url.to_owned(),
        reason: err.to_string(),
    })?;
    check_url(&parsed, allow_http).map_err(|_| BuildError::InsecureUrl {
        url: url.to_owned(),
    })?;
    if parsed.host().is_none() {
        return Err(BuildError::InvalidUrl {
            url: url.to_owned(),
            reason: "no host".into(),
        });
    }
    Ok(parsed)
}

/// `https` always; `http` only on loopback or with `allow_http`; nothing else.
pub(crate) fn check_url(url: &Url, allow_http: bool) -> Result<(), FetchError> {
    let acceptable = match url.scheme() {
        "https" => true,
        "http" => allow_http || is_loopback(url),
        _ => false,
    };
    if acceptable {
        Ok(())
    } else {
        Err(FetchError::InsecureUrl {
            url: url.to_string(),
        })
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A complete response: status, headers, and a body within the cap.
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

/// Sends `request` and reads the whole response within `deadline`, refusing redirects
/// and bodies over `max_body` bytes. Any status other than a 3xx (except 304) is
/// returned for the caller to judge.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    url: &Url,
    max_body: usize,
    deadline: Duration,
) -> Result<Response, FetchError> {
    let exchange = async {
        let mut response = request
            .send()
            .await
            .map_err(|err| transport_error(err, deadline))?;
        let status = response.status();
        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            return Err(FetchError::Redirected {
                status: status.as_u16(),
                location,
            });
        }
        // A caller-supplied client may follow redirects; the answer must still come from
        // the URL we asked.
        if response.url() != url {
            return Err(FetchError::Redirected {
                status: status.as_u16(),
                location: Some(response.url().to_string()),
            });
        }
        if response
            .content_length()
            .is_some_and(|len| len > max_body as u64)
        {
            return Err(FetchError::TooLarge { max: max_body });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| transport_error(err, deadline))?
        {
            if body.len() + chunk.len() > max_body {
                return Err(FetchError::TooLarge { max: max_body });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers: response.headers().clone(),
            body,
        })
    };
    match tokio::time::timeout(deadline, exchange).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout { after: deadline }),
    }
}

fn transport_error(err: reqwest::Error, deadline: Duration) -> FetchError {
    let reason = error_chain(&err);
    if err.is_timeout() {
        FetchError::Timeout { after: deadline }
    } else if err.is_connect() {
        FetchError::Connect { reason }
    } else {
        FetchError::Transport { reason }
    }
}

/// The error and its causes on one line, each cause once (reqwest and the AWS
/// SDK repeat themselves). Also the daemon's, for its store errors.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A uniform random number in [0, 1) for jitter, from the system RNG.
pub(crate) fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    // The system RNG failing is not a reason to stop refreshing; no jitter is then used.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_policy() {
        let ok = |url: &str, allow| parse_url(url, allow).is_ok();
        assert!(ok("https://auth.example/jwks", false));
        assert!(ok("http://127.0.0.1:8080/jwks", false));
        assert!(ok("http://127.8.9.10/jwks", false));
        assert!(ok("http://[::1]:80/jwks", false));
        assert!(ok("http://localhost/jwks", false));
        assert!(!ok("http://auth.example/jwks", false));
        assert!(!ok("http://10.0.0.1/jwks", false));
        assert!(ok("http://auth.example/jwks", true));
        assert!(!ok("ftp://auth.example/jwks", true));
        assert!(!ok("file:///etc/jwks.json", true));
        assert!(matches!(
            parse_url("not a url", false),
            Err(BuildError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn random_unit_is_in_range() {
        for _ in 0..100 {
            let value = random_unit();
            assert!((0.0..1.0).contains(&value));
        }
    }
}
