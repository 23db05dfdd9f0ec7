//! The store lease that keeps one renewer per account across processes.
//!
//! A holder id names the process: `host/pid/start/nonce`, where `start` is the
//! process's start time in clock ticks since boot (Linux `/proc/<pid>/stat`, field
//! 22), so a reused pid is not mistaken for the holder. A lease whose holder is a
//! process of this host that no longer runs is taken over at once instead of waiting
//! for it to expire: a daemon killed mid-renewal does not block its successor.
//!
//! The lease is short (`DaemonSettings::lease_ttl`, 30 s by default) and the holder
//! extends it while it works; [`LeaseGuard`] gives it up when the renewal ends, also
//! when the renewal's future is dropped (best effort).

use std::sync::Arc;

use upkeep_store::TokenStore;

/// This process's holder id.
pub(crate) fn holder_id() -> String {
    let pid = std::process::id();
    let start = process_start(pid).unwrap_or_default();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    format!("{}/{pid}/{start}/{}", host_name(), &nonce[..8])
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty() && !h.contains('/'))
        .unwrap_or_else(|| "unknown-host".into())
}

/// Start time of process `pid` in clock ticks since boot, if it runs.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    start_from_stat(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces or parentheses itself: count from the last `)`.
fn start_from_stat(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `holder` is a process of this host that is known not to run any more.
/// A holder on another host, or one this process cannot judge, is assumed alive.
pub(crate) fn holder_is_dead_local_process(holder: &str) -> bool {
    let mut parts = holder.split('/');
    let (Some(host), Some(pid), Some(start)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    if host != host_name() || pid == std::process::id() {
        return false;
    }
    match process_start(pid) {
        None => true,
        // The pid now belongs to another process (recorded start 0: unknown, alive).
        Some(now_start) => start != 0 && now_start != start,
    }
}

/// A held lease. Release it with [`LeaseGuard::release`]; if the guard is dropped
/// instead (the renewal's future was cancelled), it is released from a task.
pub(crate) struct LeaseGuard {
    store: Arc<dyn TokenStore>,
    account: String,
    holder: String,
    released: bool,
}

impl LeaseGuard {
    pub(crate) fn new(store: Arc<dyn TokenStore>, account: &str, holder: &str) -> Self {
        Self {
            store,
            account: account.to_owned(),
            holder: holder.to_owned(),
            released: false,
        }
    }

    /// The guard if the lease was taken; otherwise it is disarmed (nothing to give back).
    pub(crate) fn keep_if(mut self, taken: bool) -> Option<Self> {
        if taken {
            Some(self)
        } else {
            self.released = true;
            None
        }
    }

    pub(crate) async fn release(mut self) {
        self.released = true;
        if let Err(e) = self.store.release_lease(&self.account, &self.holder).await {
            tracing::warn!(account = %self.account, error = %e, "could not release the renewal lease; it expires by itself");
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (store, account, holder) = (
            self.store.clone(),
            std::mem::take(&mut self.account),
            std::mem::take(&mut self.holder),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.release_lease(&account, &holder).await {
                    tracing::warn!(account = %account, error = %e, "could not release the renewal lease; it expires by itself");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(start_from_stat(stat), Some(987_654));
        assert_eq!(start_from_stat("garbage"), None);
        assert_eq!(start_from_stat("1 (x) S 1"), None);
    }

    #[test]
    fn a_holder_id_names_this_host_and_process_and_is_judged_alive() {
        let me = holder_id();
        let parts: Vec<&str> = me.split('/').collect();
        assert_eq!(parts.len(), 4, "{me}");
        assert_eq!(parts[1], std::process::id().to_string());
        assert!(!holder_is_dead_local_process(&me));
    }

    #[test]
    fn a_holder_whose_process_is_gone_or_whose_pid_was_reused_is_dead_others_are_not() {
        let host = host_name();
        // A child that has exited and been reaped: its pid runs nothing now.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(holder_is_dead_local_process(&format!(
            "{host}/{pid}/12345/abcd"
        )));
        // A live process (this one's parent) recorded with another start time: pid reused.
        let parent = std::os::unix::process::parent_id();
        let start = process_start(parent).unwrap();
        assert!(holder_is_dead_local_process(&format!(
            "{host}/{parent}/{}/abcd",
            start + 1
        )));
        assert!(!holder_is_dead_local_process(&format!(
            "{host}/{parent}/{start}/abcd"
        )));
        // Another host, or an old-style holder: cannot tell, so alive.
        assert!(!holder_is_dead_local_process(&format!(
            "elsewhere/{pid}/12345/abcd"
        )));
        assert!(!holder_is_dead_local_process("upkeep-1b2c"));
    }
}
