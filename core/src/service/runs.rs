//! Runs: start, triggers, submissions, status and the journal.

use super::*;

/// Starts a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The scenario to run.
    pub scenario_id: ScenarioId,
    /// The new run's id.
    pub run_id: RunId,
    /// Where disclosed packets go.
    #[serde(default)]
    pub dispatch_targets: Vec<DispatchTarget>,
    /// The start time; its kind is the run's time kind.
    pub started_at: Timestamp,
}

/// The answer to `start_run`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartResult {
    /// The new run's head.
    pub run: RunHead,
    /// The start decision.
    pub decision: DecisionRecord,
    /// The first stage's entry packets.
    pub packets: Vec<PacketRecord>,
}

/// An agent asks whether the run may advance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextRequest {
    /// The run's scenario.
    pub scenario_id: ScenarioId,
    /// The run.
    pub run_id: RunId,
    /// Idempotency key.
    pub trigger_id: TriggerId,
    /// The asking agent.
    pub agent_id: String,
    /// The request time.
    pub time: Timestamp,
}

/// Attaches a submission to a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The run's scenario.
    pub scenario_id: ScenarioId,
    /// The run.
    pub run_id: RunId,
    /// Idempotency key within the run.
    pub submission_id: SubmissionId,
    /// The content.
    pub payload: PacketPayload,
    /// Its media type.
    pub content_type: String,
    /// The request time.
    pub submitted_at: Timestamp,
}

/// A decided trigger: its result and, when asked for, the gate evaluations that decided it
/// (empty when no gate was evaluated: a stage timeout, a run already finished).
#[derive(Clone, Debug, PartialEq)]
pub struct DecidedTrigger {
    /// The decision, the packets it disclosed and the run's status.
    pub result: TriggerResult,
    /// Each gate's evaluation with its evidence, when asked for.
    pub gate_evaluations: Option<Vec<GateEvalRecord>>,
}

/// A run's status: the head's view plus the packets it has disclosed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStatusView {
    /// The run.
    pub run_id: RunId,
    /// Its scenario.
    pub scenario_id: ScenarioId,
    /// Its stage.
    pub current_stage_id: StageId,
    /// Its lifecycle state.
    pub status: RunStatus,
    /// Its latest decision.
    pub last_decision: DecisionRecord,
    /// Every packet disclosed so far, in order.
    pub issued_packet_ids: Vec<crate::ids::PacketId>,
    /// Why it holds, when the latest decision is a hold.
    pub safe_summary: Option<SafeSummary>,
    /// Its journal revision.
    pub revision: u64,
}

impl DecisionGate {
    /// Starts a run: records the start trigger and decision and issues the first stage's entry
    /// packets, all in the run's first journal entry.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown scenario, [`Error::AlreadyExists`] for a taken run id,
    /// [`Error::PermissionDenied`] when the disclosure policy refuses the first packets (nothing
    /// is stored).
    pub async fn start_run(
        &self,
        ctx: &RequestContext,
        req: StartRequest,
    ) -> Result<StartResult, Error> {
        let request_hash = self.hash_request(&req);
        self.call(
            ctx,
            Action::ScenarioStart,
            // Out of scope must look like a missing scenario, the first thing start looks up.
            Resource::new("scenario", req.scenario_id.to_string()),
            request_hash,
            vec![(UsageMetric::RunsStarted, 1)],
            async move |effects| self.start_inner(ctx, req, effects).await,
        )
        .await
    }

    async fn start_inner(
        &self,
        ctx: &RequestContext,
        req: StartRequest,
        effects: &Effects,
    ) -> Result<(StartResult, Committed), Error> {
        let plan = self
            .plan(ctx.tenant_id, ctx.namespace_id, &req.scenario_id, None)
            .await?;
        self.check_targets(&plan, req.dispatch_targets.len())?;
        let key = Self::run_key(ctx, &req.run_id);
        // Nothing is disclosed for a run id that is taken (the dispatcher contract covers the
        // remaining race with a concurrent start).
        if self.runs.head(&key).await?.is_some() {
            return Err(Error::AlreadyExists {
                what: "run",
                id: req.run_id.to_string(),
            });
        }
        let trigger_id = TriggerId::new("init").map_err(|e| Error::Corrupt(e.to_string()))?;
        let decision_id = transition::first_decision_id();
        let packets = engine::issue_packets(
            &plan,
            0,
            DisclosureContext {
                run_id: &req.run_id,
                decision_id: &decision_id,
                issued_at: req.started_at,
                correlation_id: ctx.correlation_id.as_ref(),
                targets: &req.dispatch_targets,
            },
            self.config.hash_algorithm,
            self.policy.as_ref(),
            self.dispatcher.as_ref(),
        )
        .await
        .map_err(|f| {
            if f.denied {
                Error::PermissionDenied(f.reason)
            } else {
                Error::Unavailable(f.reason)
            }
        })?;
        let event = TriggerEvent {
            trigger_id,
            tenant_id: ctx.tenant_id,
            namespace_id: ctx.namespace_id,
            run_id: req.run_id.clone(),
            kind: TriggerKind::ExternalEvent,
            time: req.started_at,
            source_id: "system".to_owned(),
            payload: None,
            correlation_id: ctx.correlation_id.clone(),
        };
        let started = transition::start(
            &plan,
            key,
            req.scenario_id,
            req.dispatch_targets,
            &event,
            packets,
        );
        let (decision, packets) = (started.decision.clone(), started.packets.clone());
        let (head, entry) = started.into_entry(event, None);
        self.runs.create(&head, &entry, effects).await?;
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
        Ok((
            StartResult {
                run: head,
                decision,
                packets,
            },
            Committed::by_runs(self.runs.as_ref()),
        ))
    }

    /// Refuses more dispatch targets than the limit, or more disclosures on entering one stage
    /// (its entry packets times the targets) than the limit: each pair is hashed and journaled.
    fn check_targets(&self, plan: &Plan, targets: usize) -> Result<(), Error> {
        let limits = &self.config.limits;
        if let Some(rule) = Limits::count_rule("targets", targets, limits.max_dispatch_targets) {
            return Err(Error::invalid("dispatch_targets", rule));
        }
        let packets = plan.most_entry_packets();
        let disclosures = packets.saturating_mul(targets);
        match Limits::count_rule("disclosures", disclosures, limits.max_disclosures) {
            Some(rule) => Err(Error::invalid(
                "dispatch_targets",
                format!("{targets} targets x {packets} entry packets of one stage = {rule}"),
            )),
            None => Ok(()),
        }
    }

    /// An agent's request for the next decision (a trigger of kind `agent_request_next`).
    ///
    /// # Errors
    /// As [`Self::trigger`].
    pub async fn next(
        &self,
        ctx: &RequestContext,
        req: NextRequest,
    ) -> Result<TriggerResult, Error> {
        Ok(self.next_with(ctx, req, false).await?.result)
    }

    /// [`Self::next`], and with `gates` the gate evaluations the decision was made on, read in
    /// the same call (one authorization, one audit event): a caller allowed `scenario_next`
    /// may see what its own trigger evaluated. The evidence keeps raw values only when the
    /// service discloses raw evidence; digests always remain.
    ///
    /// # Errors
    /// As [`Self::trigger`].
    pub async fn next_with(
        &self,
        ctx: &RequestContext,
        req: NextRequest,
        gates: bool,
    ) -> Result<DecidedTrigger, Error> {
        let event = TriggerEvent {
            trigger_id: req.trigger_id,
            tenant_id: ctx.tenant_id,
            namespace_id: ctx.namespace_id,
            run_id: req.run_id,
            kind: TriggerKind::AgentRequestNext,
            time: req.time,
            source_id: req.agent_id,
            payload: None,
            correlation_id: ctx.correlation_id.clone(),
        };
        // The trigger event is the request as the journal records it.
        let request_hash = self.digest_request(&event);
        let resource = Resource::new("run", event.run_id.to_string());
        self.call(
            ctx,
            Action::ScenarioNext,
            resource,
            request_hash.as_ref().ok().cloned(),
            Vec::new(),
            async move |effects| {
                let request = (event, request_hash?);
                let (mut decided, committed) = self
                    .decide_trigger(
                        ctx,
                        &req.scenario_id,
                        request,
                        "scenario.next",
                        effects,
                        gates,
                    )
                    .await?;
                for record in decided
                    .gate_evaluations
                    .iter_mut()
                    .flatten()
                    .flat_map(|g| g.evidence.iter_mut())
                {
                    self.withhold_raw(&mut record.result);
                }
                Ok((decided, committed))
            },
        )
        .await
    }

    /// Decides a trigger. Each trigger id is decided once: a repeated id returns the recorded
    /// decision and packets with the current status, whatever its payload. A trigger on a
    /// finished run returns the final decision. Nothing is written in either case.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown run, [`Error::InvalidInput`] when the trigger's tenant,
    /// namespace or time kind does not match the run, [`Error::TooLarge`] for an oversized
    /// payload, [`Error::Conflict`] when the run stays too busy to append.
    pub async fn trigger(
        &self,
        ctx: &RequestContext,
        scenario_id: &ScenarioId,
        event: TriggerEvent,
    ) -> Result<TriggerResult, Error> {
        let request_hash = self.digest_request(&event);
        let resource = Resource::new("run", event.run_id.to_string());
        self.call(
            ctx,
            Action::ScenarioTrigger,
            resource,
            request_hash.as_ref().ok().cloned(),
            Vec::new(),
            async move |effects| {
                let request = (event, request_hash?);
                let (decided, committed) = self
                    .decide_trigger(
                        ctx,
                        scenario_id,
                        request,
                        "scenario.trigger",
                        effects,
                        false,
                    )
                    .await?;
                Ok((decided.result, committed))
            },
        )
        .await
    }

    /// Appends an entry with its new head. `Ok(None)` means another call appended first: the
    /// caller re-reads the head and decides again (or finds its id already recorded).
    async fn append_unless_raced(
        &self,
        expected_revision: u64,
        head: RunHead,
        entry: JournalEntry,
        effects: &Effects,
    ) -> Result<Option<Committed>, Error> {
        match self
            .runs
            .append(expected_revision, head, entry, effects)
            .await
        {
            Ok(()) => {
                self.appended.send_modify(|n| *n = n.wrapping_add(1));
                Ok(Some(Committed::by_runs(self.runs.as_ref())))
            }
            Err(StoreError::RevisionConflict { .. } | StoreError::DuplicateKey { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn load_head(
        &self,
        key: &RunKey,
        scenario_id: &ScenarioId,
    ) -> Result<RunHead, Error> {
        Self::run_of(self.runs.head(key).await?, key, scenario_id)
    }

    /// The head read for `key`, if it is a run of `scenario_id`; another scenario's run is
    /// not found, like a missing one.
    fn run_of(
        head: Option<RunHead>,
        key: &RunKey,
        scenario_id: &ScenarioId,
    ) -> Result<RunHead, Error> {
        head.filter(|h| &h.scenario_id == scenario_id)
            .ok_or_else(|| Error::NotFound {
                what: "run",
                id: key.run_id.to_string(),
            })
    }

    async fn recorded_result(
        &self,
        key: &RunKey,
        trigger_id: &TriggerId,
        status: RunStatus,
        gates: bool,
    ) -> Result<DecidedTrigger, Error> {
        let entry = self.runs.entry_for_trigger(key, trigger_id).await?;
        trigger_result(key, trigger_id, entry, status, gates)
    }

    /// `request` is the trigger event with its digest; with `gates`, the answer carries the
    /// gate evaluations of the entry that decided it.
    async fn decide_trigger(
        &self,
        ctx: &RequestContext,
        scenario_id: &ScenarioId,
        (event, request_hash): (TriggerEvent, HashDigest),
        method: &str,
        effects: &Effects,
        gates: bool,
    ) -> Result<(DecidedTrigger, Committed), Error> {
        if event.tenant_id != ctx.tenant_id || event.namespace_id != ctx.namespace_id {
            return Err(Error::invalid(
                "trigger.tenant_id",
                "the trigger's tenant and namespace must be the request's",
            ));
        }
        if let Some(payload) = &event.payload {
            check_payload(
                payload,
                "trigger.payload",
                self.config.limits.max_payload_bytes,
            )?;
        }
        let key = Self::run_key(ctx, &event.run_id);
        for _ in 0..MAX_APPEND_ATTEMPTS {
            let (head, recorded) = self.runs.head_and_trigger(&key, &event.trigger_id).await?;
            let head = Self::run_of(head, &key, scenario_id)?;
            if head.status != RunStatus::Active {
                return Ok((
                    self.recorded_result(&key, &head.last_decision.trigger_id, head.status, gates)
                        .await?,
                    Committed::NOTHING,
                ));
            }
            if let Some(entry) = recorded {
                return Ok((
                    trigger_result(&key, &event.trigger_id, Some(entry), head.status, gates)?,
                    Committed::NOTHING,
                ));
            }
            if event.time.kind() != head.stage_entered_at.kind() {
                return Err(Error::invalid(
                    "time",
                    format!(
                        "the run uses {} timestamps, the trigger sent {}",
                        head.stage_entered_at.kind(),
                        event.time.kind()
                    ),
                ));
            }
            let revision = head.revision;
            let (new_head, entry, result) = self.step(head, &event, &request_hash, method).await?;
            let gate_evaluations = match &entry.body {
                EntryBody::Trigger(t) if gates => Some(t.gate_evals.clone()),
                _ => None,
            };
            if let Some(committed) = self
                .append_unless_raced(revision, new_head, entry, effects)
                .await?
            {
                let decided = DecidedTrigger {
                    result,
                    gate_evaluations,
                };
                return Ok((decided, committed));
            }
        }
        Err(too_busy(&key, "trigger"))
    }

    /// One engine step: evidence, gates, decision, disclosure, and the entry that records them.
    /// The rules are [`transition`]'s; this supplies the plan, the evidence and the disclosure.
    /// The run's head becomes its next head.
    async fn step(
        &self,
        head: RunHead,
        event: &TriggerEvent,
        request_hash: &HashDigest,
        method: &str,
    ) -> Result<(RunHead, JournalEntry, TriggerResult), Error> {
        let plan = self
            .plan(
                head.key.tenant_id,
                head.key.namespace_id,
                &head.scenario_id,
                Some(&head.spec_hash),
            )
            .await?;
        let begun = transition::begin(&plan, &head, event).map_err(|e| match e {
            TransitionError::UnknownStage(stage) => Error::Corrupt(format!(
                "run {} is in unknown stage {stage}",
                head.key.run_id
            )),
            TransitionError::DeadlineOverflow => Error::invalid("time", e.to_string()),
        })?;
        let decided = match begun {
            Begun::TimedOut(decided) => decided,
            Begun::Evaluate(pending) => {
                let results = self
                    .gather_evidence(&plan, pending.stage(), &head, event)
                    .await;
                if plan.work(pending.stage(), &results) <= INLINE_WORK {
                    pending.decide(&plan, results, &self.config, &event.trigger_id)
                } else {
                    let (plan, config) = (plan.clone(), self.config.clone());
                    let trigger_id = event.trigger_id.clone();
                    self.off_thread(move |stop| {
                        pending.decide_until(&plan, results, &config, &trigger_id, stop)
                    })
                    .await?
                }
            }
        };
        let disclosure = match decided.discloses() {
            Some(to) => {
                let ctx = DisclosureContext {
                    run_id: &head.key.run_id,
                    decision_id: decided.decision_id(),
                    issued_at: event.time,
                    correlation_id: event.correlation_id.as_ref(),
                    targets: &head.dispatch_targets,
                };
                engine::issue_packets(
                    &plan,
                    to,
                    ctx,
                    self.config.hash_algorithm,
                    self.policy.as_ref(),
                    self.dispatcher.as_ref(),
                )
                .await
            }
            None => Ok(Vec::new()),
        };
        let next = transition::apply(&plan, head, decided, disclosure, event);
        let result = next.result();
        // Numbered from the next head, whose tool-call counter only `into_entry` moves.
        let tool_call = self.tool_call(
            &next.head,
            method,
            request_hash.clone(),
            &result,
            event.time,
            event.correlation_id.clone(),
        )?;
        let (new_head, entry) = next.into_entry(event.clone(), Some(tool_call));
        Ok((new_head, entry, result))
    }

    fn tool_call(
        &self,
        head: &RunHead,
        method: &str,
        request_hash: HashDigest,
        response: &impl Serialize,
        called_at: Timestamp,
        correlation_id: Option<crate::ids::CorrelationId>,
    ) -> Result<ToolCallRecord, Error> {
        let alg = self.config.hash_algorithm;
        Ok(ToolCallRecord {
            call_id: format!("call-{}", head.counts.tool_calls + 1),
            method: method.to_owned(),
            request_hash,
            response_hash: alg
                .digest_json(response)
                .map_err(|e| Error::invalid("response", e.to_string()))?,
            called_at,
            correlation_id,
            error: None,
        })
    }

    /// Queries every condition of the stage once, concurrently, in the configured order; a
    /// provider failure becomes an evidence error, never a trigger failure.
    async fn gather_evidence(
        &self,
        plan: &Plan,
        stage: usize,
        head: &RunHead,
        event: &TriggerEvent,
    ) -> Vec<EvidenceResult> {
        let ctx = EvidenceContext::for_trigger(head, event);
        let providers = self.providers(head.key.tenant_id);
        let queries: Vec<_> = plan.stage_conditions(stage).map(|(_, q)| q).collect();
        let order = plan.query_order(stage, self.config.condition_order);
        let ctx = &ctx;
        // Collected first: a stream over the mapping closure itself trips rustc's
        // higher-ranked `Send` check (rust-lang/rust#102211) where callers spawn the call.
        let futures: Vec<_> = order
            .iter()
            .map(|&slot| {
                let query = queries[slot];
                async move {
                    let answer = match providers.get(&query.provider_id) {
                        None => EvidenceResult::failed(EvidenceError::new(
                            "provider_missing",
                            format!("provider {} is not registered", query.provider_id),
                        )),
                        Some(provider) => provider.query(query, ctx).await.unwrap_or_else(|e| {
                            EvidenceResult::failed(EvidenceError::new(
                                "provider_error",
                                e.to_string(),
                            ))
                        }),
                    };
                    (slot, answer)
                }
            })
            .collect();
        let mut by_slot: Vec<Option<EvidenceResult>> = vec![None; queries.len()];
        use futures::StreamExt as _;
        // At most `max_concurrent_queries` in flight; they start in query order.
        let mut answers = futures::stream::iter(futures)
            .buffer_unordered(self.config.limits.max_concurrent_queries.max(1));
        while let Some((slot, answer)) = answers.next().await {
            by_slot[slot] = Some(answer);
        }
        by_slot
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    EvidenceResult::failed(EvidenceError::new(
                        "evidence_missing",
                        "no answer was gathered for this condition",
                    ))
                })
            })
            .collect()
    }

    /// Attaches a submission to a run. The same id with the same content returns the recorded
    /// submission; with different content it is a conflict.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::TooLarge`], [`Error::Conflict`].
    pub async fn submit(
        &self,
        ctx: &RequestContext,
        req: SubmitRequest,
    ) -> Result<SubmissionRecord, Error> {
        let request_hash = self.digest_request(&req);
        self.call(
            ctx,
            Action::ScenarioSubmit,
            Resource::new("run", req.run_id.to_string()),
            request_hash.as_ref().ok().cloned(),
            Vec::new(),
            async move |effects| self.submit_inner(ctx, (req, request_hash?), effects).await,
        )
        .await
    }

    /// `request` is the submission request with its digest.
    async fn submit_inner(
        &self,
        ctx: &RequestContext,
        (req, request_hash): (SubmitRequest, HashDigest),
        effects: &Effects,
    ) -> Result<(SubmissionRecord, Committed), Error> {
        check_payload(
            &req.payload,
            "payload",
            self.config.limits.max_payload_bytes,
        )?;
        let key = Self::run_key(ctx, &req.run_id);
        for _ in 0..MAX_APPEND_ATTEMPTS {
            let head = self.load_head(&key, &req.scenario_id).await?;
            if let Some(entry) = self
                .runs
                .entry_for_submission(&key, &req.submission_id)
                .await?
            {
                let EntryBody::Submission(existing) = entry.body else {
                    return Err(Error::Corrupt(format!(
                        "run {}: submission entry of the wrong kind",
                        key.run_id
                    )));
                };
                if existing.submission.payload == req.payload
                    && existing.submission.content_type == req.content_type
                {
                    return Ok((existing.submission, Committed::NOTHING));
                }
                return Err(Error::Conflict(format!(
                    "submission_id {} already holds a different payload",
                    req.submission_id
                )));
            }
            let content_hash = req
                .payload
                .content_hash(self.config.hash_algorithm)
                .map_err(|e| Error::invalid("payload", e.to_string()))?;
            let submission = SubmissionRecord {
                submission_id: req.submission_id.clone(),
                run_id: req.run_id.clone(),
                payload: req.payload.clone(),
                content_type: req.content_type.clone(),
                content_hash,
                submitted_at: req.submitted_at,
                correlation_id: ctx.correlation_id.clone(),
            };
            let tool_call = self.tool_call(
                &head,
                "scenario.submit",
                request_hash.clone(),
                &submission,
                req.submitted_at,
                ctx.correlation_id.clone(),
            )?;
            let mut new_head = head.clone();
            new_head.revision += 1;
            new_head.counts.submissions += 1;
            new_head.counts.tool_calls += 1;
            let entry = JournalEntry {
                revision: new_head.revision,
                body: EntryBody::Submission(Box::new(SubmissionEntry {
                    submission: submission.clone(),
                    tool_call,
                })),
            };
            if let Some(committed) = self
                .append_unless_raced(head.revision, new_head, entry, effects)
                .await?
            {
                return Ok((submission, committed));
            }
        }
        Err(too_busy(&key, "submission"))
    }

    /// A run's status. Read-only: it writes nothing to the run.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn status(
        &self,
        ctx: &RequestContext,
        scenario_id: &ScenarioId,
        run_id: &RunId,
    ) -> Result<RunStatusView, Error> {
        self.read_run(ctx, scenario_id, run_id, async |key, head| {
            let mut issued_packet_ids = Vec::new();
            if head.counts.packets > 0 {
                self.for_each_entry(&key, head.revision, |entry| {
                    if let EntryBody::Trigger(t) = &entry.body {
                        issued_packet_ids
                            .extend(t.packets.iter().map(|p| p.envelope.packet_id.clone()));
                    }
                })
                .await?;
            }
            let safe_summary = match &head.last_decision.outcome {
                DecisionOutcome::Hold { summary } => Some(summary.clone()),
                _ => None,
            };
            Ok(RunStatusView {
                run_id: head.key.run_id.clone(),
                scenario_id: head.scenario_id.clone(),
                current_stage_id: head.current_stage_id.clone(),
                status: head.status,
                last_decision: head.last_decision.clone(),
                issued_packet_ids,
                safe_summary,
                revision: head.revision,
            })
        })
        .await
    }

    /// A page of a run's journal: entries after revision `after`, ascending.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::InvalidInput`] for a limit outside 1..=`max_page_size`.
    pub async fn journal(
        &self,
        ctx: &RequestContext,
        scenario_id: &ScenarioId,
        run_id: &RunId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JournalEntry>, Error> {
        self.call(
            ctx,
            Action::ScenarioStatus,
            Resource::new("run", run_id.to_string()),
            None,
            Vec::new(),
            async move |_| {
                self.check_page(limit)?;
                let key = Self::run_key(ctx, run_id);
                self.load_head(&key, scenario_id).await?;
                Ok((
                    self.runs.entries(&key, after, limit).await?,
                    Committed::NOTHING,
                ))
            },
        )
        .await
    }

    /// A read of one run, authorized and audited as `scenario_status`: `read` gets the run's
    /// key and head (an unknown run, or one of another scenario, is not found).
    pub(super) async fn read_run<T>(
        &self,
        ctx: &RequestContext,
        scenario_id: &ScenarioId,
        run_id: &RunId,
        read: impl AsyncFnOnce(RunKey, RunHead) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.call(
            ctx,
            Action::ScenarioStatus,
            Resource::new("run", run_id.to_string()),
            None,
            Vec::new(),
            async move |_| {
                let key = Self::run_key(ctx, run_id);
                let head = self.load_head(&key, scenario_id).await?;
                Ok((read(key, head).await?, Committed::NOTHING))
            },
        )
        .await
    }

    pub(super) async fn for_each_entry(
        &self,
        key: &RunKey,
        up_to: u64,
        mut f: impl FnMut(&JournalEntry),
    ) -> Result<(), Error> {
        let mut after = 0;
        while after < up_to {
            let page = self
                .runs
                .entries(key, after, crate::store::MAX_PAGE_SIZE)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.revision;
            page.iter().filter(|e| e.revision <= up_to).for_each(&mut f);
        }
        Ok(())
    }
}

/// The answer when a run stayed too contended for `MAX_APPEND_ATTEMPTS` tries.
fn too_busy(key: &RunKey, what: &str) -> Error {
    Error::Conflict(format!("run {} is too busy; retry the {what}", key.run_id))
}

/// The recorded answer to a trigger: its entry's decision and packets, with the current status
/// (and, with `gates`, its gate evaluations).
fn trigger_result(
    key: &RunKey,
    trigger_id: &TriggerId,
    entry: Option<JournalEntry>,
    status: RunStatus,
    gates: bool,
) -> Result<DecidedTrigger, Error> {
    match entry.map(|e| e.body) {
        Some(EntryBody::Trigger(t)) => Ok(DecidedTrigger {
            result: TriggerResult {
                decision: t.decision,
                packets: t.packets,
                status,
            },
            gate_evaluations: gates.then_some(t.gate_evals),
        }),
        _ => Err(Error::Corrupt(format!(
            "run {}: no entry for trigger {trigger_id}",
            key.run_id
        ))),
    }
}

/// Refuses an inline payload over the limit.
fn check_payload(payload: &PacketPayload, field: &str, limit: usize) -> Result<(), Error> {
    let actual = payload
        .inline_size()
        .map_err(|e| Error::invalid(field, e.to_string()))?;
    if actual > limit {
        return Err(Error::TooLarge {
            field: field.to_owned(),
            limit,
            actual,
        });
    }
    Ok(())
}
