//! Offers: the allocation run, offers made, declined, rescinded and recovered.

use super::*;

impl Master {
    /// Returns an offer's resources to its agent; with `refuse`, installs a
    /// decline filter for them.
    pub(super) fn recover_offer(&mut self, offer_id: &str, refuse: Option<Duration>, now: Instant) {
        let Some(rec) = self.offers.remove(offer_id) else { return };
        if let Some(a) = self.agents.get_mut(&rec.agent_id) {
            a.offered.subtract(&rec.resources);
        }
        if let Some(fw) = self.frameworks.get_mut(&rec.framework_id) {
            fw.offers.remove(offer_id);
            if let Some(alloc) = fw.allocated.get_mut(&rec.role) {
                alloc.subtract(&rec.resources);
            }
            if let Some(refuse) = refuse {
                fw.filters.add(
                    FilterKey { role: rec.role, agent_id: rec.agent_id },
                    rec.resources,
                    now,
                    now + refuse,
                );
            }
        }
    }

    pub(super) fn rescind(&mut self, offer_id: &str, now: Instant) {
        let Some(fw_id) = self.offers.get(offer_id).map(|r| r.framework_id.clone()) else { return };
        let mut e = sched::Event {
            rescind: Some(event::Rescind { offer_id: v1::OfferId { value: offer_id.into() } }),
            ..Default::default()
        };
        e.set_type(event::Type::Rescind);
        self.send_framework(&fw_id, e);
        self.recover_offer(offer_id, None, now);
    }

    /// One allocation run: every agent's free resources go, in weighted DRF
    /// order, to the first (framework, role) that may take them; each
    /// framework then gets one OFFERS event.
    pub(crate) fn allocate(&mut self, now: Instant) {
        self.allocation_wanted = false;
        let mut agent_ids: Vec<String> =
            self.agents.values().filter(|a| a.conn.is_some()).map(|a| a.id().to_owned()).collect();
        if agent_ids.is_empty() {
            return;
        }
        agent_ids.shuffle(&mut self.rng);
        let mut totals = Resources::default();
        for a in self.agents.values().filter(|a| a.conn.is_some()) {
            totals.add(&a.total);
        }
        let mut clients: Vec<Client> = Vec::new();
        for (id, fw) in &self.frameworks {
            if !fw.connected() {
                continue;
            }
            for role in &fw.roles {
                if fw.suppressed.contains(role) {
                    continue;
                }
                let allocated = fw.allocated.get(role).cloned().unwrap_or_default();
                clients.push(Client { framework_id: id.clone(), role: role.clone(), allocated });
            }
        }
        if clients.is_empty() {
            return;
        }
        let mut order = allocator::Order::new(clients, &totals, &self.config.weights);
        let mut new_offers: BTreeMap<String, Vec<v1::Offer>> = BTreeMap::new();
        for agent_id in agent_ids {
            let Some(agent) = self.agents.get(&agent_id) else { continue };
            let mut free = agent.free();
            if !is_allocatable(&free) {
                continue;
            }
            let has_gpus = agent.has_gpus();
            loop {
                let frameworks = &self.frameworks;
                let pick = order.first_eligible(|client| {
                    let fw = frameworks.get(&client.framework_id)?;
                    if has_gpus && !fw.caps.gpu {
                        return None;
                    }
                    let offerable = free.allocatable_to(&client.role);
                    if !is_allocatable(&offerable) {
                        return None;
                    }
                    let key = FilterKey { role: client.role.clone(), agent_id: agent_id.clone() };
                    if fw.filters.refuses(&key, &offerable, now) {
                        return None;
                    }
                    Some(offerable)
                });
                let Some((idx, offerable)) = pick else { break };
                let client = order.client(idx).clone();
                free.subtract(&offerable);
                order.charge(idx, &offerable, &totals);
                let offer =
                    self.make_offer(&client.framework_id, &client.role, &agent_id, offerable, now);
                new_offers.entry(client.framework_id).or_default().push(offer);
                if !is_allocatable(&free) {
                    break;
                }
            }
        }
        for (fw_id, offers) in new_offers {
            let mut e =
                sched::Event { offers: Some(event::Offers { offers }), ..Default::default() };
            e.set_type(event::Type::Offers);
            self.send_framework(&fw_id, e);
        }
    }

    pub(super) fn make_offer(
        &mut self,
        fw_id: &str,
        role: &str,
        agent_id: &str,
        resources: Resources,
        now: Instant,
    ) -> v1::Offer {
        let id = format!("{}-O{}", self.master_id(), self.next_offer);
        self.next_offer += 1;
        let fw = self.frameworks.get_mut(fw_id).expect("allocation only picks known frameworks");
        let agent = self.agents.get_mut(agent_id).expect("allocation only picks known agents");
        agent.offered.add(&resources);
        fw.allocated.entry(role.to_owned()).or_default().add(&resources);
        fw.offers.insert(id.clone());
        let alloc_role = fw.alloc_role(role);
        let executor_ids = agent
            .executors
            .keys()
            .filter(|(f, _)| f == fw_id)
            .map(|(_, e)| v1::ExecutorId { value: e.clone() })
            .collect();
        let address = v1::Address {
            hostname: Some(agent.info.hostname.clone()),
            ip: Some(agent.info.hostname.clone()),
            port: agent.info.port.unwrap_or(5051),
        };
        let offer = v1::Offer {
            id: v1::OfferId { value: id.clone() },
            framework_id: v1::FrameworkId { value: fw_id.into() },
            agent_id: v1::AgentId { value: agent_id.into() },
            hostname: agent.info.hostname.clone(),
            resources: resources_to_proto(
                &alloc_role.map_or_else(|| resources.clone(), |role| resources.allocated_to(role)),
                Format::for_framework(fw.caps.refinement),
            ),
            executor_ids,
            attributes: agent.info.attributes.clone(),
            url: Some(v1::Url {
                scheme: "http".into(),
                address,
                path: Some("/slave(1)".into()),
                query: vec![],
                fragment: None,
            }),
            allocation_info: alloc_role
                .map(|r| v1::resource::AllocationInfo { role: Some(r.into()) }),
            domain: agent.info.domain.clone(),
            unavailability: None,
        };
        self.offers.insert(
            id,
            OfferRec {
                framework_id: fw_id.into(),
                agent_id: agent_id.into(),
                role: role.into(),
                resources,
                created: now,
            },
        );
        offer
    }
}
