//! `km mesos-execute`: run one command as a Mesos task, like Mesos's own
//! `mesos-execute`. A small v1 framework on km's scheduler client: subscribe,
//! take the first offer that fits, launch, acknowledge updates, print each
//! state, and exit with success only if the task finished.

use std::time::Duration;

use anyhow::{Context as _, bail};
use km_mesos::ContentType;
use km_mesos::resources::{Format, resources_from_proto, resources_to_proto};
use km_mesos::scheduler::{Config, Event, Scheduler};
use km_mesos::v1::scheduler::event;
use km_mesos::v1::{self, TaskState};
use km_resources::Resources;

/// Flags of `km mesos-execute` (Mesos's names).
#[derive(Debug, Clone, clap::Args)]
pub struct ExecuteArgs {
    /// The master, `host:port` or `http://host:port`.
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub master: String,
    /// Task (and framework) name.
    #[arg(long)]
    pub name: String,
    /// Shell command to run.
    #[arg(long)]
    pub command: String,
    /// Resources of the task, in `--resources` syntax.
    #[arg(long, default_value = "cpus:0.1;mem:32")]
    pub resources: String,
    /// Role to run in.
    #[arg(long, default_value = "*")]
    pub role: String,
    /// Give up if no offer fits within this many seconds.
    #[arg(long = "offer_timeout_secs", default_value_t = 30)]
    pub offer_timeout_secs: u64,
}

/// Runs the task to its end. Errors when it did not finish successfully.
pub async fn execute(args: ExecuteArgs) -> anyhow::Result<()> {
    let master = if args.master.contains("://") {
        args.master.clone()
    } else {
        format!("http://{}", args.master)
    };
    let master = master.parse().with_context(|| format!("invalid --master '{}'", args.master))?;
    let wanted = km_resources::parse_resources(&args.resources)
        .map_err(|e| anyhow::anyhow!("invalid --resources {e}"))?;
    let wanted_bag: Resources = wanted.iter().cloned().collect();
    let wanted = resources_to_proto(&wanted, Format::PostRefinement);
    km_resources::validate_role(&args.role).context("invalid --role")?;
    let info = v1::FrameworkInfo {
        user: std::env::var("USER").unwrap_or_else(|_| "root".into()),
        name: format!("km mesos-execute ({})", args.name),
        roles: vec![args.role.clone()],
        capabilities: vec![{
            let mut c = v1::framework_info::Capability::default();
            c.set_type(v1::framework_info::capability::Type::MultiRole);
            c
        }],
        ..Default::default()
    };
    let mut config = Config::new(master, info);
    config.content_type = ContentType::Protobuf;
    let (sched, mut events) =
        Scheduler::start(config).context("cannot start the scheduler client")?;
    let task_id = v1::TaskId { value: format!("{}-{}", args.name, uuid::Uuid::new_v4().simple()) };
    let mut launched = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.offer_timeout_secs);
    loop {
        let next = if launched {
            events.recv().await
        } else {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(e) => e,
                Err(_) => {
                    bail!("no offer fit {} within {} s", args.resources, args.offer_timeout_secs)
                }
            }
        };
        let Some(ev) = next else { bail!("the master ended the subscription") };
        match ev {
            Event::Subscribed { framework_id, .. } => {
                report(&format!("subscribed as {}", framework_id.value))
            }
            Event::Disconnected { reason, .. } => {
                report(&format!("disconnected: {reason}; retrying"))
            }
            Event::Mesos(e) => match e.r#type() {
                event::Type::Offers if !launched => {
                    let offers = e.offers.map(|o| o.offers).unwrap_or_default();
                    let (fit, rest): (Vec<_>, Vec<_>) =
                        offers.into_iter().partition(|o| fits(&wanted_bag, o));
                    let ids: Vec<v1::OfferId> = rest.into_iter().map(|o| o.id).collect();
                    if !ids.is_empty() {
                        sched.decline(ids, None).await.context("DECLINE failed")?;
                    }
                    let Some(offer) = fit.into_iter().next() else { continue };
                    let task = v1::TaskInfo {
                        name: args.name.clone(),
                        task_id: task_id.clone(),
                        agent_id: offer.agent_id.clone(),
                        resources: wanted.clone(),
                        command: Some(v1::CommandInfo {
                            value: Some(args.command.clone()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    let mut op = v1::offer::Operation {
                        launch: Some(v1::offer::operation::Launch { task_infos: vec![task] }),
                        ..Default::default()
                    };
                    op.set_type(v1::offer::operation::Type::Launch);
                    sched.accept(vec![offer.id], vec![op], None).await.context("ACCEPT failed")?;
                    report(&format!("launched task {} on {}", task_id.value, offer.hostname));
                    launched = true;
                }
                event::Type::Offers => {
                    let ids = e
                        .offers
                        .map(|o| o.offers.into_iter().map(|o| o.id).collect())
                        .unwrap_or_default();
                    sched.decline(ids, None).await.context("DECLINE failed")?;
                }
                event::Type::Update => {
                    let Some(status) = e.update.map(|u| u.status) else { continue };
                    if status.task_id != task_id {
                        continue;
                    }
                    sched.acknowledge(&status).await.context("ACKNOWLEDGE failed")?;
                    let state = status.state();
                    let message = status.message.clone().unwrap_or_default();
                    report(&format!("task {} is {} {message}", task_id.value, state.as_str_name()));
                    if crate::core::is_terminal(state) {
                        let _ = sched.teardown().await;
                        if state == TaskState::TaskFinished {
                            return Ok(());
                        }
                        bail!("task ended in {} {message}", state.as_str_name());
                    }
                }
                event::Type::Error => {
                    bail!(
                        "the master refused the framework: {}",
                        e.error.map(|x| x.message).unwrap_or_default()
                    )
                }
                _ => {}
            },
        }
    }
}

/// Whether the offer holds what the task asks for, reservation by reservation
/// (the master refuses a task asking unreserved resources from reserved ones).
/// An offer that does not convert fits nothing.
fn fits(wanted: &Resources, offer: &v1::Offer) -> bool {
    resources_from_proto(&offer.resources).is_ok_and(|have| have.unallocated().contains(wanted))
}

/// What happens to the task is this command's output: plain lines on stdout.
#[allow(clippy::print_stdout)]
fn report(line: &str) {
    println!("{line}");
}
