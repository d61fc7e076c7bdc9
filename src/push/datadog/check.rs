//! `push datadog --check`: asks the Agent's `/info` whether it takes profiles, and says what is
//! wrong if not. It returns a report; printing it is the command line's business.

use std::time::Duration;

use anyhow::Result;
use hyper::{Method, StatusCode};

use super::{
    DatadogConfig,
    http::{Http, body_snippet},
    settings::{AGENT_PROFILES_PATH, Settings, Target, join},
};
use crate::{
    error::{Exit, coded, usage},
    text::printable,
};

/// What `/info` says.
#[derive(Debug, serde::Serialize)]
pub struct CheckReport {
    pub destination: String,
    pub agent_version: Option<String>,
    pub accepts_profiles: bool,
}

impl CheckReport {
    /// The line `--check` prints without `--json`.
    pub fn line(&self) -> String {
        let version = self
            .agent_version
            .as_deref()
            .map_or(String::new(), |v| format!(" (version {})", printable(v)));
        format!(
            "{}{version} accepts profiles at {AGENT_PROFILES_PATH}",
            self.destination
        )
    }
}

/// Asks the Agent's `/info` whether it takes profiles: the report if it does, else an error
/// saying why not.
pub fn check(config: &DatadogConfig, timeout: Duration) -> Result<CheckReport> {
    crate::push::check_timeout(timeout)?;
    let settings = Settings::resolve(config, &|name| std::env::var(name).ok())?;
    check_settings(&settings, timeout)
}

/// [`check`], for settings already resolved.
pub fn check_settings(settings: &Settings, timeout: Duration) -> Result<CheckReport> {
    let Target::Agent { base, .. } = &settings.target else {
        return Err(usage(
            "--check asks a Datadog Agent, but amprof is set to upload agentless (DD_API_KEY is set and no Agent is configured); give --agent-url to check an Agent",
        ));
    };
    let agent = settings.target.describe();
    let failed = |problem: String| coded(Exit::Failure, problem);
    let http = Http::new()?;
    let response = http
        .exchange(Method::GET, &join(base, "/info")?, &[], Vec::new(), timeout)
        .map_err(|e| {
            failed(format!(
                "cannot reach {agent}: {e:#}. Is the Agent running with APM enabled (apm_config.enabled, DD_APM_ENABLED)? Point amprof at it with --agent-url or DD_TRACE_AGENT_URL"
            ))
        })?;
    if response.status == StatusCode::NOT_FOUND {
        return Err(failed(format!(
            "{agent} has no /info (HTTP 404): it is not a Datadog Agent, or one too old to take profiles"
        )));
    }
    if !response.status.is_success() {
        return Err(failed(format!(
            "{agent} answered HTTP {} to /info{}",
            response.status,
            body_snippet(&String::from_utf8_lossy(&response.body))
        )));
    }
    let info: serde_json::Value = serde_json::from_slice(&response.body).map_err(|_| {
        failed(format!(
            "{agent} answered /info with something that is not JSON: is it a Datadog Agent?"
        ))
    })?;
    let version = info["version"].as_str().map(str::to_string);
    let endpoints: Vec<&str> = info["endpoints"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e.as_str()).collect())
        .unwrap_or_default();
    let version_text = version
        .as_deref()
        .map_or(String::new(), |v| format!(" (version {})", printable(v)));
    if !endpoints.contains(&AGENT_PROFILES_PATH) {
        return Err(failed(format!(
            "{agent}{version_text} lists no {AGENT_PROFILES_PATH} endpoint in its /info: it may not take profiles (an Agent older than 7.x, or one that is not a Datadog Agent)"
        )));
    }
    Ok(CheckReport {
        destination: agent,
        agent_version: version,
        accepts_profiles: true,
    })
}
