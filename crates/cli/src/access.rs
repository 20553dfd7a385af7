//! `gauntlet keys|projects|audit`: API keys, projects and their quotas,
//! and the audit log, through the gateway's AccessService. The calls are
//! made with the process's key (`--api-key`, GAUNTLET_API_KEY).

use std::time::Duration;

use gauntlet_config::GauntletConfig;
use gauntlet_proto::v1::{self, access_service_client::AccessServiceClient};

use crate::client;

#[derive(clap::Args, Debug, Clone)]
pub struct Server {
    /// The gateway (http:// or https://HOST:PORT).
    #[arg(long, env = "GAUNTLET_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
}

impl Server {
    /// The gateway's AccessService, called with this process's key.
    async fn access(
        &self,
        config: &GauntletConfig,
    ) -> anyhow::Result<AccessServiceClient<client::Conn>> {
        Ok(client::Gateway::connect(&self.server, config).await?.access)
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum RoleArg {
    /// Read runs, results, reports, analytics.
    Viewer,
    /// Also submit and cancel runs, create reports.
    Member,
    /// Also manage the project's keys and quotas.
    Admin,
}

impl From<RoleArg> for v1::Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Viewer => v1::Role::Viewer,
            RoleArg::Member => v1::Role::Member,
            RoleArg::Admin => v1::Role::Admin,
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a key for your project (operators: --project for any). Its
    /// secret is printed once, here, and stored only as a hash.
    Create {
        #[arg(long, value_enum)]
        role: RoleArg,
        /// What the key is for (shown by `keys list`).
        #[arg(long, default_value = "")]
        name: String,
        /// Another project's key (operators only).
        #[arg(long)]
        project: Option<String>,
        /// Expire after this long: 90d, 12h, 30m, 45s.
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        ttl: Option<Duration>,
        /// Its own RPC rate limit, calls a minute (default: the gateway's
        /// auth.rate_per_minute).
        #[arg(long, value_name = "N")]
        rate_per_minute: Option<u64>,
        #[command(flatten)]
        server: Server,
    },
    /// List the project's keys (never their secrets).
    List {
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// Revoke a key; gateways stop taking it within auth.cache_secs (5 s).
    Revoke {
        id: String,
        #[command(flatten)]
        server: Server,
    },
    /// Print a fresh key without a server: for auth.bootstrap_key
    /// (GAUNTLET_AUTH__BOOTSTRAP_KEY), the first admin key of a new
    /// deployment.
    Generate,
}

/// A project's quotas as flags; an absent flag is no limit.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct QuotaArgs {
    /// Runs queued or running at once.
    #[arg(long, value_name = "N")]
    pub max_concurrent_runs: Option<u64>,
    /// Tasks one run may expand into.
    #[arg(long, value_name = "N")]
    pub max_tasks_per_run: Option<u64>,
    /// Tasks of the runs submitted over any 24 hours.
    #[arg(long, value_name = "N")]
    pub max_tasks_per_day: Option<u64>,
    /// USD the runs submitted in a calendar month (UTC) may cost: checked
    /// against what they spent plus each new run's estimate.
    #[arg(long, value_name = "USD")]
    pub monthly_budget_usd: Option<f64>,
    /// Share of the dispatch window against other busy projects (1-1000,
    /// default 1).
    #[arg(long, value_name = "N")]
    pub weight: Option<u32>,
}

impl QuotaArgs {
    fn quotas(&self) -> v1::Quotas {
        v1::Quotas {
            max_concurrent_runs: self.max_concurrent_runs,
            max_tasks_per_run: self.max_tasks_per_run,
            max_tasks_per_day: self.max_tasks_per_day,
            monthly_budget_usd: self.monthly_budget_usd,
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum ProjectsCommand {
    /// Create a project (operators: admins of the `default` project).
    Create {
        /// Lowercase letters, digits and '-'.
        id: String,
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        quotas: QuotaArgs,
        #[command(flatten)]
        server: Server,
    },
    /// List projects (operators: all; others: their own) with their use.
    List {
        #[command(flatten)]
        server: Server,
    },
    /// Show a project (default: your own), its quotas and use.
    Show {
        id: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// Set a project's quotas and weight (admins); every quota not given
    /// is lifted.
    Set {
        id: Option<String>,
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        quotas: QuotaArgs,
        #[command(flatten)]
        server: Server,
    },
}

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// Events to show, newest first (up to 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Those before this event id (the last of the previous page).
    #[arg(long, value_name = "ID")]
    pub before: Option<i64>,
    /// One JSON object a line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: Server,
}

/// `90d`, `12h`, `30m`, `45s`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (90d, 12h, 30m, 45s)"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit must be d, h, m or s")),
    };
    n.checked_mul(secs)
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is not a duration of at least a second"))
}

fn when(t: Option<&prost_types::Timestamp>) -> String {
    match t {
        Some(t) => chrono::DateTime::from_timestamp(t.seconds, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default(),
        None => "-".into(),
    }
}

fn role_name(role: i32) -> &'static str {
    match v1::Role::try_from(role) {
        Ok(v1::Role::Viewer) => "viewer",
        Ok(v1::Role::Member) => "member",
        Ok(v1::Role::Admin) => "admin",
        _ => "?",
    }
}

pub async fn keys(config: &GauntletConfig, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Generate => {
            let (_, token) = gauntlet_gateway::access::generate();
            println!("{token}");
            Ok(())
        }
        KeysCommand::Create {
            role,
            name,
            project,
            ttl,
            rate_per_minute,
            server,
        } => {
            let mut access = server.access(config).await?;
            let created = access
                .create_key(v1::CreateKeyRequest {
                    project_id: project.unwrap_or_default(),
                    role: v1::Role::from(role) as i32,
                    name,
                    ttl_secs: ttl.map_or(0, |t| t.as_secs()),
                    rate_per_minute: rate_per_minute.unwrap_or(0),
                })
                .await
                .map_err(|s| client::status_message("create key", &s))?
                .into_inner();
            let key = created.key.unwrap_or_default();
            eprintln!(
                "key {} ({} of project {}{}); it is shown once:",
                key.id,
                role_name(key.role),
                key.project_id,
                match &key.expires_at {
                    Some(t) => format!(", expires {}", when(Some(t))),
                    None => String::new(),
                }
            );
            println!("{}", created.secret);
            Ok(())
        }
        KeysCommand::List { project, server } => {
            let mut access = server.access(config).await?;
            let keys = access
                .list_keys(v1::ListKeysRequest {
                    project_id: project.unwrap_or_default(),
                })
                .await
                .map_err(|s| client::status_message("list keys", &s))?
                .into_inner()
                .keys;
            println!(
                "{:<12}  {:<7}  {:<16}  {:<16}  {:<16}  {:<16}  name",
                "id", "role", "created", "expires", "revoked", "rate/min"
            );
            for k in keys {
                println!(
                    "{:<12}  {:<7}  {:<16}  {:<16}  {:<16}  {:<16}  {}",
                    k.id,
                    role_name(k.role),
                    when(k.created_at.as_ref()),
                    when(k.expires_at.as_ref()),
                    when(k.revoked_at.as_ref()),
                    if k.rate_per_minute == 0 {
                        "default".to_owned()
                    } else {
                        k.rate_per_minute.to_string()
                    },
                    k.name
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { id, server } => {
            let mut access = server.access(config).await?;
            let key = access
                .revoke_key(v1::RevokeKeyRequest { id })
                .await
                .map_err(|s| client::status_message("revoke key", &s))?
                .into_inner();
            println!(
                "revoked key {} of project {} at {}",
                key.id,
                key.project_id,
                when(key.revoked_at.as_ref())
            );
            Ok(())
        }
    }
}

fn print_project(p: &v1::Project) {
    let q = p.quotas.unwrap_or_default();
    let limit = |n: Option<u64>| n.map_or_else(|| "none".to_owned(), |n| n.to_string());
    println!("project {} ({})", p.id, p.name);
    println!("  weight               {}", p.weight);
    println!(
        "  concurrent runs      {} of {}",
        p.active_runs,
        limit(q.max_concurrent_runs)
    );
    println!("  tasks per run        {}", limit(q.max_tasks_per_run));
    println!(
        "  tasks, last 24 h     {} of {}",
        p.tasks_last_day,
        limit(q.max_tasks_per_day)
    );
    println!(
        "  cost this month      ${:.4} of {}",
        p.cost_this_month_usd,
        q.monthly_budget_usd
            .map_or_else(|| "none".to_owned(), |b| format!("${b:.2}"))
    );
}

pub async fn projects(config: &GauntletConfig, command: ProjectsCommand) -> anyhow::Result<()> {
    match command {
        ProjectsCommand::Create {
            id,
            name,
            quotas,
            server,
        } => {
            let mut access = server.access(config).await?;
            let project = access
                .create_project(v1::CreateProjectRequest {
                    id,
                    name,
                    quotas: Some(quotas.quotas()),
                    weight: quotas.weight.unwrap_or(0),
                })
                .await
                .map_err(|s| client::status_message("create project", &s))?
                .into_inner();
            print_project(&project);
        }
        ProjectsCommand::List { server } => {
            let mut access = server.access(config).await?;
            let projects = access
                .list_projects(v1::ListProjectsRequest {})
                .await
                .map_err(|s| client::status_message("list projects", &s))?
                .into_inner()
                .projects;
            println!(
                "{:<24}  {:>6}  {:>11}  {:>12}  {:>12}  name",
                "id", "weight", "active runs", "tasks (24 h)", "cost (month)"
            );
            for p in projects {
                println!(
                    "{:<24}  {:>6}  {:>11}  {:>12}  {:>12}  {}",
                    p.id,
                    p.weight,
                    p.active_runs,
                    p.tasks_last_day,
                    format!("${:.2}", p.cost_this_month_usd),
                    p.name
                );
            }
        }
        ProjectsCommand::Show { id, server } => {
            let mut access = server.access(config).await?;
            let project = access
                .get_project(v1::GetProjectRequest {
                    id: id.unwrap_or_default(),
                })
                .await
                .map_err(|s| client::status_message("get project", &s))?
                .into_inner();
            print_project(&project);
        }
        ProjectsCommand::Set {
            id,
            name,
            quotas,
            server,
        } => {
            let mut access = server.access(config).await?;
            let project = access
                .update_project(v1::UpdateProjectRequest {
                    id: id.unwrap_or_default(),
                    name,
                    quotas: Some(quotas.quotas()),
                    weight: quotas.weight.unwrap_or(0),
                })
                .await
                .map_err(|s| client::status_message("update project", &s))?
                .into_inner();
            print_project(&project);
        }
    }
    Ok(())
}

pub async fn audit(config: &GauntletConfig, args: AuditArgs) -> anyhow::Result<()> {
    let mut access = args.server.access(config).await?;
    let events = access
        .list_audit_events(v1::ListAuditEventsRequest {
            limit: args.limit,
            before_id: args.before.unwrap_or(0),
        })
        .await
        .map_err(|s| client::status_message("list audit events", &s))?
        .into_inner()
        .events;
    if args.json {
        for e in &events {
            let at = e
                .at
                .as_ref()
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            println!(
                "{}",
                serde_json::json!({
                    "id": e.id, "at": at, "project": e.project_id, "key": e.key_id,
                    "method": e.method, "target": e.target, "outcome": e.outcome, "peer": e.peer,
                })
            );
        }
        return Ok(());
    }
    if events.is_empty() {
        println!("no audit events");
        return Ok(());
    }
    println!(
        "{:>8}  {:<19}  {:<12}  {:<42}  {:<36}  {:<18}  peer",
        "id", "at (UTC)", "key", "method", "target", "outcome"
    );
    for e in events {
        let at =
            e.at.as_ref()
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
        println!(
            "{:>8}  {:<19}  {:<12}  {:<42}  {:<36}  {:<18}  {}",
            e.id,
            at,
            if e.key_id.is_empty() { "-" } else { &e.key_id },
            e.method.trim_start_matches("/gauntlet.v1."),
            e.target,
            e.outcome,
            e.peer
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_take_a_unit_and_refuse_nonsense() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("3w").unwrap_err().contains("unit"));
        assert!(parse_duration("soon").is_err());
    }
}
