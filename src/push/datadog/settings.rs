//! Where `push datadog` sends, and what it tags, resolved once from the configuration and the
//! environment the way Datadog's own libraries resolve it: the Agent (`--agent-url`,
//! `DD_TRACE_AGENT_URL`, `DD_AGENT_HOST` + `DD_TRACE_AGENT_PORT`, the socket
//! `/var/run/datadog/apm.socket` if present, else `http://localhost:8126`), or, with `DD_API_KEY`
//! and no Agent setting (or `--agentless`), Datadog's intake for `DD_SITE`.

use std::{fmt, path::Path, time::Duration};

use anyhow::{Context as _, Result, anyhow};
use hyper::Uri;
use libdd_common::tag::Tag;

use crate::{error::usage, push::http::without_credentials};

/// The Agent's profile intake path.
pub const AGENT_PROFILES_PATH: &str = "/profiling/v1/input";
/// The Agent socket Datadog's libraries look for.
const AGENT_SOCKET: &str = "/var/run/datadog/apm.socket";
const DEFAULT_AGENT_URL: &str = "http://localhost:8126";
const DEFAULT_SITE: &str = "datadoghq.com";

/// What the user asked of `push datadog` (flags; `cli` fills it, the environment completes it in
/// [`Settings::resolve`]).
#[derive(Clone, Debug, Default)]
pub struct DatadogConfig {
    /// The Datadog Agent: http://HOST:PORT, https://HOST:PORT, unix:///PATH or a socket path.
    /// Default: DD_TRACE_AGENT_URL, else DD_AGENT_HOST and DD_TRACE_AGENT_PORT (8126), else the
    /// socket /var/run/datadog/apm.socket if it exists, else http://localhost:8126.
    pub agent_url: Option<String>,

    /// Send straight to Datadog's intake, with the API key in DD_API_KEY (never a flag). This is
    /// the default when DD_API_KEY is set and no Agent is configured.
    pub agentless: bool,

    /// Datadog site for agentless uploads, e.g. datadoghq.eu. Default: DD_SITE, else
    /// datadoghq.com.
    pub site: Option<String>,

    /// Intake URL for agentless uploads (e.g. through a proxy). Default:
    /// `https://intake.profile.SITE/api/v2/profile`.
    pub intake_url: Option<String>,

    /// One service for every profile. Default: DD_SERVICE; without either, each program gets a
    /// service of its own, named after its executable (kernel threads: `kernel`).
    pub service: Option<String>,

    /// The `env` tag. Default: DD_ENV.
    pub env: Option<String>,

    /// The `version` tag. Default: DD_VERSION.
    pub service_version: Option<String>,

    /// A tag for every profile (repeatable; comma-separated lists too), added to those of
    /// DD_TAGS.
    pub tags: Vec<String>,

    /// Merge consecutive windows into profiles this long (e.g. 60s). Default: one profile per
    /// window.
    pub period: Option<Duration>,
}

/// The API key: shown as a placeholder by `Debug` and `Display`.
#[derive(Clone)]
pub struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where profiles go.
#[derive(Debug, Clone)]
pub enum Target {
    /// A Datadog Agent: `base` is its root URL (as libdd-common parses it: a unix socket's path
    /// is hex-encoded in the authority), `shown` the URL as the user knows it.
    Agent { base: Uri, shown: String },
    /// Datadog's intake.
    Agentless { url: Uri, api_key: ApiKey },
}

impl Target {
    /// Where profiles go, for messages: a user and password in the URL are not shown.
    pub fn describe(&self) -> String {
        match self {
            Target::Agent { shown, .. } => {
                format!("the Datadog Agent at {}", without_credentials(shown))
            }
            Target::Agentless { url, .. } => format!(
                "Datadog's intake at {} (agentless)",
                without_credentials(&url.to_string())
            ),
        }
    }

    pub fn upload_uri(&self) -> Result<Uri> {
        match self {
            Target::Agent { base, .. } => join(base, AGENT_PROFILES_PATH),
            Target::Agentless { url, .. } => Ok(url.clone()),
        }
    }

    pub fn api_key(&self) -> Option<&str> {
        match self {
            Target::Agentless { api_key, .. } => Some(&api_key.0),
            Target::Agent { .. } => None,
        }
    }
}

/// Everything `config` and the environment say, checked.
#[derive(Debug)]
pub struct Settings {
    pub target: Target,
    /// One service for everything, or `None`: one per program.
    pub service: Option<String>,
    /// Tags of every profile: env, version, DD_TAGS, --tag.
    pub tags: Vec<Tag>,
    pub period: Option<Duration>,
}

impl Settings {
    /// Reads `config`, falling back on the environment as `env` reports it.
    pub fn resolve(config: &DatadogConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let api_key = env("DD_API_KEY");
        let agent_configured = config.agent_url.is_some()
            || env("DD_TRACE_AGENT_URL").is_some()
            || env("DD_AGENT_HOST").is_some();
        let agentless = config.agentless
            || config.intake_url.is_some()
            || (api_key.is_some() && !agent_configured);
        let target = if agentless {
            let Some(key) = api_key else {
                return Err(usage(
                    "agentless upload needs an API key in the environment variable DD_API_KEY",
                ));
            };
            let key = key.trim().to_string();
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(usage(
                    "DD_API_KEY is not a valid API key (it must be printable ASCII without spaces)",
                ));
            }
            let url = match &config.intake_url {
                Some(url) => url.clone(),
                None => {
                    let site = config
                        .site
                        .clone()
                        .or_else(|| env("DD_SITE"))
                        .unwrap_or_else(|| DEFAULT_SITE.into());
                    let site = site.trim();
                    if site.is_empty() || site.contains(['/', ':', ' ']) {
                        return Err(usage(format!(
                            "`{site}` is not a Datadog site like datadoghq.com or datadoghq.eu"
                        )));
                    }
                    format!("https://intake.profile.{site}/api/v2/profile")
                }
            };
            let url = parse_http_url(&url).map_err(|e| usage(format!("--intake-url: {e}")))?;
            Target::Agentless {
                url,
                api_key: ApiKey(key),
            }
        } else {
            agent_target(config.agent_url.as_deref(), &env)?
        };
        let service = match config.service.clone().or_else(|| env("DD_SERVICE")) {
            Some(s) if s.trim().is_empty() => return Err(usage("the service name is empty")),
            other => other.map(|s| s.trim().to_string()),
        };
        let mut tags = Vec::new();
        for (key, value) in [
            ("env", config.env.clone().or_else(|| env("DD_ENV"))),
            (
                "version",
                config.service_version.clone().or_else(|| env("DD_VERSION")),
            ),
        ] {
            if let Some(value) = value {
                tags.push(Tag::new(key, value.trim()).map_err(|e| usage(format!("--{key}: {e}")))?);
            }
        }
        let mut add_tags = |text: &str, source: &str| -> Result<()> {
            let (parsed, error) = libdd_common::tag::parse_tags(text);
            if let Some(error) = error {
                return Err(usage(format!("{source}: {error}")));
            }
            tags.extend(parsed);
            Ok(())
        };
        if let Some(dd_tags) = env("DD_TAGS") {
            add_tags(&dd_tags, "DD_TAGS")?;
        }
        for tag in &config.tags {
            add_tags(tag, "--tag")?;
        }
        if config.period.is_some_and(|p| p.is_zero()) {
            return Err(usage("--period must be longer than 0"));
        }
        Ok(Self {
            target,
            service,
            tags,
            period: config.period,
        })
    }
}

/// The Agent `flag` names, or the environment, or the defaults.
fn agent_target(flag: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Result<Target> {
    let (shown, source) = if let Some(url) = flag {
        (url.trim().to_string(), "--agent-url")
    } else if let Some(url) = env("DD_TRACE_AGENT_URL") {
        (url.trim().to_string(), "DD_TRACE_AGENT_URL")
    } else if let Some(host) = env("DD_AGENT_HOST") {
        let port = match env("DD_TRACE_AGENT_PORT") {
            Some(port) => port
                .trim()
                .parse::<u16>()
                .map_err(|_| usage(format!("DD_TRACE_AGENT_PORT=`{port}` is not a port number")))?,
            None => 8126,
        };
        let host = host.trim();
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        (format!("http://{host}:{port}"), "DD_AGENT_HOST")
    } else if Path::new(AGENT_SOCKET).exists() {
        (format!("unix://{AGENT_SOCKET}"), "the Agent socket")
    } else {
        (DEFAULT_AGENT_URL.to_string(), "the default")
    };
    let shown = if shown.starts_with('/') {
        format!("unix://{shown}")
    } else if !shown.contains("://") {
        format!("http://{shown}")
    } else {
        shown
    };
    let base = if let Some(path) = shown.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(usage(format!(
                "{source}: `{}` is not a socket URL like unix:///var/run/datadog/apm.socket",
                without_credentials(&shown)
            )));
        }
        socket_uri(Path::new(path)).map_err(|e| usage(format!("{source}: {e}")))?
    } else {
        let url = parse_http_url(&shown).map_err(|e| usage(format!("{source}: {e}")))?;
        agent_root(&url).map_err(|e| usage(format!("{source}: {e}")))?
    };
    Ok(Target::Agent { base, shown })
}

/// The Agent's root URL from `url`, given as the root (`http://host:8126`) or as its profile
/// intake (`http://host:8126/profiling/v1/input`, the form of Datadog's docs). Any other path
/// is refused: amprof never builds a path the user did not mean.
fn agent_root(url: &Uri) -> Result<Uri> {
    let path = url.path().trim_end_matches('/');
    let root = match path.strip_suffix(AGENT_PROFILES_PATH) {
        _ if path.is_empty() => return Ok(url.clone()),
        Some("") => "/",
        _ => {
            return Err(anyhow!(
                "`{}` has the path `{path}`: give the Agent's address (http://HOST:8126) or its profile intake (http://HOST:8126{AGENT_PROFILES_PATH})",
                without_credentials(&url.to_string())
            ));
        }
    };
    let mut parts = url.clone().into_parts();
    parts.path_and_query = Some(root.parse().context("cannot build the Agent's URL")?);
    Uri::from_parts(parts).context("cannot build the Agent's URL")
}

/// The URI libdd-common's connector takes for a unix socket: `unix://HEX/`, the socket's path
/// hex-encoded in the authority. (Built here: libdd-common 1.1's own `parse_uri` panics on it
/// with http 1.5, which rejects the empty path it gives.)
fn socket_uri(path: &Path) -> Result<Uri> {
    use std::os::unix::ffi::OsStrExt as _;
    let hex: String = path
        .as_os_str()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Uri::builder()
        .scheme("unix")
        .authority(hex)
        .path_and_query("/")
        .build()
        .map_err(|e| anyhow!("`{}` cannot be a socket path ({e})", path.display()))
}

/// An http or https URL with a host. Errors show it without its user and password.
fn parse_http_url(url: &str) -> Result<Uri> {
    let shown = without_credentials(url);
    let uri: Uri = url
        .parse()
        .map_err(|_| anyhow!("`{shown}` is not a URL like http://localhost:8126"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(uri),
        _ => Err(anyhow!(
            "`{shown}` is not an http://, https:// or unix:// URL with a host"
        )),
    }
}

/// `base` with `path` appended to its path.
pub fn join(base: &Uri, path: &str) -> Result<Uri> {
    let mut parts = base.clone().into_parts();
    let prefix = parts
        .path_and_query
        .as_ref()
        .map_or("", |p| p.path())
        .trim_end_matches('/');
    parts.path_and_query = Some(
        format!("{prefix}{path}")
            .parse()
            .with_context(|| format!("cannot add {path} to the URL"))?,
    );
    Uri::from_parts(parts).with_context(|| format!("cannot add {path} to the URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(config: &DatadogConfig, vars: &[(&str, &str)]) -> Result<Settings> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(config, &move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn shown(settings: &Settings) -> String {
        match &settings.target {
            Target::Agent { shown, .. } => shown.clone(),
            Target::Agentless { url, .. } => format!("agentless {url}"),
        }
    }

    #[test]
    fn finds_the_agent_the_conventional_way() {
        let config = DatadogConfig::default();
        let default = resolve(&config, &[]).unwrap();
        if !Path::new(AGENT_SOCKET).exists() {
            assert_eq!(shown(&default), "http://localhost:8126");
        }
        let s = resolve(
            &config,
            &[("DD_AGENT_HOST", "agent"), ("DD_TRACE_AGENT_PORT", "9126")],
        );
        assert_eq!(shown(&s.unwrap()), "http://agent:9126");
        let s = resolve(&config, &[("DD_AGENT_HOST", "::1")]).unwrap();
        assert_eq!(shown(&s), "http://[::1]:8126");
        let s = resolve(
            &config,
            &[
                ("DD_TRACE_AGENT_URL", "unix:///run/apm.sock"),
                ("DD_AGENT_HOST", "x"),
            ],
        )
        .unwrap();
        assert_eq!(shown(&s), "unix:///run/apm.sock");
        let flag = DatadogConfig {
            agent_url: Some("/tmp/apm.sock".into()),
            ..DatadogConfig::default()
        };
        let s = resolve(&flag, &[("DD_TRACE_AGENT_URL", "http://other:1")]).unwrap();
        assert_eq!(shown(&s), "unix:///tmp/apm.sock");
        assert!(
            resolve(
                &config,
                &[("DD_AGENT_HOST", "a"), ("DD_TRACE_AGENT_PORT", "x")]
            )
            .is_err()
        );
        let bad = DatadogConfig {
            agent_url: Some("ftp://x".into()),
            ..DatadogConfig::default()
        };
        assert!(resolve(&bad, &[]).is_err());
    }

    #[test]
    fn goes_agentless_with_an_api_key_and_no_agent() {
        let config = DatadogConfig::default();
        let s = resolve(
            &config,
            &[("DD_API_KEY", "abc"), ("DD_SITE", "datadoghq.eu")],
        )
        .unwrap();
        assert_eq!(
            shown(&s),
            "agentless https://intake.profile.datadoghq.eu/api/v2/profile"
        );
        assert!(!format!("{s:?}").contains("abc"), "Debug shows no key");
        let s = resolve(
            &config,
            &[("DD_API_KEY", "abc"), ("DD_AGENT_HOST", "agent")],
        )
        .unwrap();
        assert_eq!(shown(&s), "http://agent:8126");
        let forced = DatadogConfig {
            agentless: true,
            ..DatadogConfig::default()
        };
        assert!(resolve(&forced, &[]).is_err(), "agentless needs a key");
        assert!(resolve(&config, &[("DD_API_KEY", "a b")]).is_err());
    }

    #[test]
    fn gathers_tags() {
        let config = DatadogConfig {
            env: Some("prod".into()),
            tags: vec!["team:perf".into(), "a:b,c:d".into()],
            ..DatadogConfig::default()
        };
        let s = resolve(
            &config,
            &[
                ("DD_ENV", "ignored"),
                ("DD_VERSION", "1.2"),
                ("DD_TAGS", "x:y z:w"),
            ],
        )
        .unwrap();
        let tags: Vec<String> = s.tags.iter().map(|t| t.to_string()).collect();
        assert_eq!(
            tags,
            [
                "env:prod",
                "version:1.2",
                "x:y",
                "z:w",
                "team:perf",
                "a:b",
                "c:d"
            ]
        );
        let bad = DatadogConfig {
            tags: vec![":oops".into()],
            ..DatadogConfig::default()
        };
        assert!(resolve(&bad, &[]).is_err());
    }

    #[test]
    fn agent_urls_are_taken_with_or_without_the_intake_path() {
        for (given, upload) in [
            ("http://a:8126", "http://a:8126/profiling/v1/input"),
            ("http://a:8126/", "http://a:8126/profiling/v1/input"),
            (
                "http://a:8126/profiling/v1/input",
                "http://a:8126/profiling/v1/input",
            ),
            (
                "http://a:8126/profiling/v1/input/",
                "http://a:8126/profiling/v1/input",
            ),
        ] {
            let config = DatadogConfig {
                agent_url: Some(given.into()),
                ..DatadogConfig::default()
            };
            let settings = resolve(&config, &[]).unwrap();
            assert_eq!(
                settings.target.upload_uri().unwrap().to_string(),
                upload,
                "{given}"
            );
        }
        let other = DatadogConfig {
            agent_url: Some("http://a:8126/other".into()),
            ..DatadogConfig::default()
        };
        let error = resolve(&other, &[]).unwrap_err().to_string();
        assert!(error.contains("has the path `/other`"), "{error}");
    }

    #[test]
    fn joins_paths() {
        let base: Uri = "http://h:1".parse().unwrap();
        assert_eq!(join(&base, "/info").unwrap().to_string(), "http://h:1/info");
        let base: Uri = "http://h:1/prefix/".parse().unwrap();
        assert_eq!(
            join(&base, AGENT_PROFILES_PATH).unwrap().to_string(),
            "http://h:1/prefix/profiling/v1/input"
        );
        let socket = socket_uri(Path::new("/run/a.sock")).unwrap();
        let joined = join(&socket, "/info").unwrap();
        assert_eq!(joined.scheme_str(), Some("unix"));
        assert_eq!(joined.path(), "/info");
        let path = libdd_common::connector::uds::socket_path_from_uri(&joined).unwrap();
        assert_eq!(
            path,
            Path::new("/run/a.sock"),
            "the connector finds the socket"
        );
    }
}
