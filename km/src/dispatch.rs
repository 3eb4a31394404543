//! argv[0] dispatch: `km` installed under another name runs that subcommand.

use std::ffi::OsString;
use std::path::Path;

/// Subcommands that may be reached through a symlink. Kept in step with
/// `Command` in main.rs by the `every_subcommand_is_dispatchable` test (hidden
/// ones, which km runs itself, are not reached that way).
pub(crate) const SUBCOMMANDS: &[&str] = &[
    "podmaster",
    "mesos-master",
    "mesos-execute",
    "mesos-agent",
    "apiserver",
    "kubelet",
    "scheduler",
    "executor",
    "controller-manager",
    "local-up",
    "restart",
    "make-symlinks",
];

/// kubectl plugins km is: kubectl runs `kubectl-restart` on the PATH for `kubectl restart`.
pub(crate) const KUBECTL_PLUGINS: &[(&str, &str)] = &[("kubectl-restart", "restart")];

/// Rewrites `[/usr/bin/km-podmaster, --flag]` (or `podmaster`) into
/// `[km, podmaster, --flag]`. Any other program name is left alone, so `km`
/// itself (or a renamed copy) parses its arguments as usual.
pub(crate) fn normalize_args(mut args: Vec<OsString>) -> Vec<OsString> {
    let Some(argv0) = args.first() else {
        return vec![OsString::from("km")];
    };
    let name = Path::new(argv0).file_name().and_then(|n| n.to_str()).unwrap_or("km");
    let plugin = KUBECTL_PLUGINS.iter().find(|(link, _)| *link == name).map(|(_, sub)| *sub);
    let sub = plugin.unwrap_or_else(|| name.strip_prefix("km-").unwrap_or(name));
    if SUBCOMMANDS.contains(&sub) {
        let sub = OsString::from(sub);
        args[0] = OsString::from("km");
        args.insert(1, sub);
    }
    args
}

/// `km make-symlinks`.
#[derive(Debug, clap::Args)]
pub(crate) struct SymlinkArgs {
    /// The directory to create the links in (put it on the PATH for `kubectl restart`).
    #[arg(default_value = ".")]
    dir: std::path::PathBuf,
}

/// Links `km-<subcommand>` and the kubectl plugins to this binary in `args.dir`, replacing
/// links of the same names; a file that is not a link is left alone and reported.
pub(crate) fn make_symlinks(args: &SymlinkArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let exe = std::env::current_exe().context("finding the km binary")?;
    let exe = exe.canonicalize().with_context(|| format!("resolving {}", exe.display()))?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let names = SUBCOMMANDS
        .iter()
        .filter(|s| **s != "make-symlinks")
        .map(|s| format!("km-{s}"))
        .chain(KUBECTL_PLUGINS.iter().map(|(link, _)| (*link).to_owned()));
    for name in names {
        let link = args.dir.join(&name);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(&link)
                .with_context(|| format!("replacing {}", link.display()))?,
            Ok(_) => anyhow::bail!("{} exists and is not a link: not replaced", link.display()),
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&exe, &link)
            .with_context(|| format!("linking {} to {}", link.display(), exe.display()))?;
    }
    tracing::info!(dir = %args.dir.display(), "links to {} created", exe.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_args(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn plain_km_is_untouched() {
        assert_eq!(
            norm(&["/usr/bin/km", "podmaster", "--key", "k"]),
            ["/usr/bin/km", "podmaster", "--key", "k"]
        );
    }

    #[test]
    fn symlink_names_select_the_subcommand() {
        assert_eq!(norm(&["/opt/km-podmaster", "--key", "k"]), ["km", "podmaster", "--key", "k"]);
        assert_eq!(norm(&["podmaster"]), ["km", "podmaster"]);
    }

    #[test]
    fn the_kubectl_plugin_name_runs_restart() {
        assert_eq!(
            norm(&["/home/u/bin/kubectl-restart", "deploy/web", "-n", "x"]),
            ["km", "restart", "deploy/web", "-n", "x"]
        );
        assert_eq!(norm(&["kubectl-podmaster"]), ["kubectl-podmaster"]);
    }

    #[test]
    fn unknown_names_fall_through_to_km() {
        assert_eq!(norm(&["./km-nonsense", "help"]), ["./km-nonsense", "help"]);
        assert_eq!(norm(&[]), ["km"]);
    }

    #[test]
    fn every_subcommand_is_dispatchable() {
        let cli = crate::Cli::command();
        let mut names: Vec<&str> =
            cli.get_subcommands().filter(|c| !c.is_hide_set()).map(|c| c.get_name()).collect();
        names.retain(|n| *n != "help");
        names.sort_unstable();
        let mut known = SUBCOMMANDS.to_vec();
        known.sort_unstable();
        assert_eq!(names, known, "dispatch::SUBCOMMANDS must list every subcommand");
    }
}
