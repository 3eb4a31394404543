//! Time: heartbeats, failover and offer timeouts, agents that stay away.

use super::*;

impl Master {
    /// Heartbeats, failover timeouts, offer timeouts, unreachable agents.
    pub(crate) fn tick(&mut self, now: Instant, wall: SystemTime) {
        let hb = self.config.heartbeat_interval;
        let mut beats = Vec::new();
        for fw in self.frameworks.values_mut() {
            if let Some(conn) = fw.conn
                && now.duration_since(fw.last_heartbeat) >= hb
            {
                fw.last_heartbeat = now;
                beats.push(Out::Scheduler(conn, heartbeat()));
            }
        }
        self.out.extend(beats);
        if now.duration_since(self.operator_heartbeat) >= hb {
            self.operator_heartbeat = now;
            let mut e = op::Event::default();
            e.set_type(op::event::Type::Heartbeat);
            self.broadcast_operator(e);
        }
        self.ping_agents(now, wall);
        let expired: Vec<String> = self
            .frameworks
            .iter()
            .filter(|(_, f)| f.failover_deadline.is_some_and(|d| now >= d))
            .map(|(k, _)| k.clone())
            .collect();
        for id in expired {
            tracing::info!(framework_id = %id, "failover timeout passed");
            self.remove_framework(&id, now, wall);
        }
        if let Some(timeout) = self.config.offer_timeout {
            let old: Vec<String> = self
                .offers
                .iter()
                .filter(|(_, o)| now.duration_since(o.created) >= timeout)
                .map(|(k, _)| k.clone())
                .collect();
            for id in old {
                self.rescind(&id, now);
            }
        }
        let gone: Vec<String> = self
            .agents
            .iter()
            .filter(|(_, a)| {
                a.disconnected_at
                    .is_some_and(|d| now.duration_since(d) >= self.config.agent_unreachable_timeout)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for id in gone {
            self.mark_unreachable(&id, now, wall);
        }
        if self.recovery_deadline.is_some_and(|d| now >= d) {
            self.recovery_deadline = None;
            self.recovered_agents_missed_reregistration(wall);
        }
    }

    /// Pings every connected agent each `agent_ping_interval`; one that has
    /// been silent (no PONG, no call at all) for `agent_unreachable_timeout`
    /// — partitioned, or hung, with its connection still open — is cut off
    /// and marked unreachable, as one that disconnected and stayed away.
    fn ping_agents(&mut self, now: Instant, wall: SystemTime) {
        let mut ping = agent::Event::default();
        ping.set_type(agent::event::Type::Heartbeat);
        let mut silent = Vec::new();
        for (id, a) in &mut self.agents {
            let Some(conn) = a.conn else { continue };
            if now.duration_since(a.last_seen) >= self.config.agent_unreachable_timeout {
                silent.push((id.clone(), conn));
            } else if now.duration_since(a.last_ping) >= self.config.agent_ping_interval {
                a.last_ping = now;
                self.out.push(Out::Agent(conn, ping.clone()));
            }
        }
        for (id, conn) in silent {
            tracing::warn!(agent_id = %id, "agent stopped answering pings");
            self.conns.remove(&conn);
            self.out.push(Out::Close(conn));
            self.agent_disconnected(&id, conn, now, wall);
            self.mark_unreachable(&id, now, wall);
        }
    }

    /// Agents known from the registry that did not re-register within
    /// `--agent_reregister_timeout` become unreachable: reconciliation stops
    /// holding back and answers for their tasks (TASK_UNREACHABLE for
    /// PARTITION_AWARE frameworks, TASK_LOST otherwise), and the agents may
    /// still come back as returning unreachable agents do.
    fn recovered_agents_missed_reregistration(&mut self, wall: SystemTime) {
        let missing = std::mem::take(&mut self.recovered);
        if missing.is_empty() {
            return;
        }
        tracing::warn!(
            agents = missing.len(),
            "agents from the registry did not re-register in time; they are unreachable"
        );
        let when = epoch_secs(wall);
        for (id, info) in missing {
            self.unreachable.insert(id, (info, when));
        }
        self.registry_dirty = true;
    }
}
