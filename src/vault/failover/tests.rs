use super::*;

#[test]
fn address_lists_parse() {
    let a = Addresses::parse("http://n1:8200, http://n2:8200,http://n3:8200").unwrap();
    assert_eq!(a.len(), 3);
    assert_eq!(a.to_string(), "http://n1:8200,http://n2:8200,http://n3:8200");
    assert_eq!(a.first(), &Endpoint::parse("http://n1:8200").unwrap());
    assert_eq!(Addresses::parse("https://vault:8200").unwrap().len(), 1);
    for (bad, why) in [
        ("", "empty"),
        ("http://a:1,,http://b:1", "empty entry"),
        ("http://a:1,", "empty entry"),
        ("http://a:1,http://a:1/", "listed twice"),
        ("http://a:1,vault:8200", "must start with"),
        ("http://a:99999", "not a port"),
    ] {
        let e = Addresses::parse(bad).unwrap_err();
        assert!(e.contains(why), "{bad:?}: {e}");
    }
    let many: Vec<String> = (1..=17).map(|i| format!("http://n{i}:8200")).collect();
    assert!(Addresses::parse(&many.join(",")).unwrap_err().contains("at most 16"));
}

#[test]
fn old_single_endpoints_deserialize_as_lists() {
    let one = serde_json::to_value(Endpoint::parse("http://n1:8200").unwrap()).unwrap();
    let a: Addresses = serde_json::from_value(one).unwrap();
    assert_eq!(a, Addresses::parse("http://n1:8200").unwrap());
    let list = Addresses::parse("http://n1:8200,unix:///run/agent.sock").unwrap();
    let back: Addresses = serde_json::from_value(serde_json::to_value(&list).unwrap()).unwrap();
    assert_eq!(back, list);
    assert!(serde_json::from_str::<Addresses>("[]").is_err());
}

fn answer(status: u16, body: &str) -> Result<Response, HttpError> {
    Ok(Response {
        status,
        headers: Default::default(),
        body: bytes::Bytes::from(body.to_string()),
    })
}

#[test]
fn openbao_answers_are_classified() {
    // As a 3-node raft OpenBao 2.7 answered during elections and seals.
    let sealed = answer(503, r#"{"errors":["Vault is sealed"]}"#);
    assert_eq!(classify(&sealed), Verdict::NotServing(Reason::Sealed));
    let leaderless = answer(
        500,
        r#"{"errors":["local node not active but active cluster node not found"]}"#,
    );
    assert_eq!(classify(&leaderless), Verdict::NotServing(Reason::NoActiveNode));
    assert_eq!(classify(&answer(307, "")), Verdict::NotServing(Reason::NoActiveNode));
    assert_eq!(
        classify(&answer(501, r#"{"errors":["Vault is not initialized"]}"#)),
        Verdict::NotServing(Reason::Uninitialized)
    );
    // Anything else may have been processed.
    assert_eq!(
        classify(&answer(500, r#"{"errors":["internal error"]}"#)),
        Verdict::Ambiguous
    );
    assert_eq!(
        classify(&answer(503, r#"{"errors":["injected fault: 503"]}"#)),
        Verdict::Ambiguous
    );
    assert_eq!(classify(&answer(502, "<html>bad gateway</html>")), Verdict::Ambiguous);
    for s in [200, 204, 400, 403, 404, 429] {
        assert_eq!(classify(&answer(s, "{}")), Verdict::Final, "{s}");
    }
    assert_eq!(
        classify(&Err(HttpError::Connect("connection refused".into()))),
        Verdict::Unreached(Reason::Unreachable)
    );
    assert_eq!(classify(&Err(HttpError::Broken("reset".into()))), Verdict::Ambiguous);
    assert_eq!(
        classify(&Err(HttpError::Tls("invalid peer certificate".into()))),
        Verdict::Unreached(Reason::TlsRefused)
    );
    assert_eq!(
        classify(&Err(HttpError::Timeout(Duration::from_secs(1)))),
        Verdict::TimedOut
    );
    assert!(Verdict::NotServing(Reason::Sealed).unprocessed());
    assert!(!Verdict::Ambiguous.unprocessed());
}

#[test]
fn health_codes_are_read() {
    assert!(NodeState::from_health(200).serving());
    assert!(NodeState::from_health(429).serving());
    assert!(NodeState::from_health(473).serving());
    for s in [472, 501, 503, 530] {
        assert!(!NodeState::from_health(s).serving(), "{s}");
    }
}

#[test]
fn failed_nodes_go_last_and_come_back() {
    let h = Health::new(3);
    let t0 = Instant::now();
    assert_eq!(h.order(t0), vec![0, 1, 2]);
    assert!(h.failed(0, "refused", t0));
    assert_eq!(h.order(t0), vec![1, 2, 0], "a failed node is tried last");
    assert!(h.failed(1, "sealed", t0 + Duration::from_millis(10)));
    assert_eq!(h.order(t0), vec![2, 0, 1], "down nodes: soonest retry first");
    // After its cool-down a node is preferred again, in list order.
    assert_eq!(h.order(t0 + Duration::from_millis(1005)), vec![0, 2, 1]);
    // Consecutive failures lengthen the cool-down, up to 30 s.
    for _ in 0..10 {
        h.failed(0, "refused", t0);
    }
    assert_eq!(h.order(t0 + Duration::from_secs(29)), vec![1, 2, 0]);
    assert_eq!(h.order(t0 + Duration::from_secs(31)), vec![0, 1, 2]);
    assert_eq!(h.down(), vec![0, 1]);
    assert!(h.succeeded(0), "it was down");
    assert!(!h.succeeded(0));
    assert_eq!(h.status(1), (true, "sealed".to_string()));
    assert_eq!(h.down(), vec![1]);
    // The active node, once a probe found it, goes first.
    let h = Health::new(3);
    h.set_state(0, Some(NodeState::Standby));
    h.set_state(2, Some(NodeState::Active));
    assert!(h.active_known() && h.is_standby(0) && !h.is_standby(1));
    assert_eq!(h.order(t0), vec![2, 0, 1]);
    h.failed(2, "refused", t0);
    assert!(!h.active_known(), "a failure forgets the role");
    assert_eq!(h.order(t0), vec![0, 1, 2]);
}

#[test]
fn backoff_grows_and_stays_inside_the_deadline() {
    assert_eq!(backoff(0), Duration::from_millis(100));
    assert_eq!(backoff(1), Duration::from_millis(200));
    assert_eq!(backoff(4), Duration::from_millis(1600));
    assert_eq!(backoff(5), Duration::from_secs(2));
    assert_eq!(backoff(40), Duration::from_secs(2));
    let now = Instant::now();
    assert!(fits(now, Duration::from_millis(100), now + Duration::from_millis(300)));
    assert!(!fits(now, Duration::from_millis(101), now + Duration::from_millis(300)));
    assert_eq!(
        wait_within(5, now, now + Duration::from_secs(10)),
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        wait_within(5, now, now + Duration::from_millis(700)),
        Some(Duration::from_millis(500))
    );
    assert_eq!(wait_within(0, now, now + Duration::from_millis(205)), None);
}

fn seen(verdict: Verdict) -> Seen {
    Seen {
        verdict,
        redirect: false,
        standby_refusal: false,
    }
}

/// Steps `f` against `answer(node, now)` with a simulated clock, each
/// attempt taking `cost`; returns the steps and when it gave up.
fn simulate(
    mut f: Failover,
    t0: Instant,
    cost: Duration,
    mut answer: impl FnMut(usize, Duration) -> Verdict,
) -> (Vec<Step>, Duration) {
    let mut now = t0;
    let mut steps = Vec::new();
    loop {
        let step = f.next(now, || vec![0, 1, 2]);
        steps.push(step);
        match step {
            Step::Send(i) => {
                let v = answer(i, now - t0);
                now += cost;
                if f.observe(seen(v)) == Next::Done {
                    return (steps, now - t0);
                }
            }
            Step::Wait(d) => now += d,
            Step::GiveUp(_) => return (steps, now - t0),
        }
        assert!(steps.len() < 10_000, "the machine ends");
    }
}

#[test]
fn every_address_refusing_gives_up_after_the_budget_not_the_deadline() {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(88);
    let f = Failover::new(Resend::Login, false, t0, deadline, Duration::from_secs(10));
    let refused = |_, _| Verdict::Unreached(Reason::Unreachable);
    let (steps, took) = simulate(f, t0, Duration::from_millis(1), refused);
    assert_eq!(steps.last(), Some(&Step::GiveUp(Stop::Budget)));
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(11),
        "gave up at {took:?}"
    );
    // Every round tries every node, and waits grow up to 2 s.
    assert_eq!(
        &steps[..4],
        &[Step::Send(0), Step::Send(1), Step::Send(2), Step::Wait(backoff(0))]
    );
    assert!(steps
        .iter()
        .all(|s| !matches!(s, Step::Wait(d) if *d > Duration::from_secs(2))));
}

#[test]
fn an_election_is_waited_out_past_the_budget_until_the_deadline() {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(30);
    let budget = Duration::from_secs(5);
    // Node 0 is dead; the others have no leader until 12 s, then 1 leads.
    let electing = |i: usize, at: Duration| match i {
        0 => Verdict::Unreached(Reason::Unreachable),
        1 if at >= Duration::from_secs(12) => Verdict::Final,
        _ => Verdict::NotServing(Reason::NoActiveNode),
    };
    let f = Failover::new(Resend::Idempotent, false, t0, deadline, budget);
    let (steps, took) = simulate(f, t0, Duration::from_millis(1), electing);
    assert!(matches!(steps.last(), Some(Step::Send(1))), "{:?}", steps.last());
    assert!(
        took >= Duration::from_secs(12) && took < Duration::from_secs(15),
        "{took:?}"
    );
    // An election that never ends still stops at the deadline.
    let endless = |_, _| Verdict::NotServing(Reason::NoActiveNode);
    let f = Failover::new(Resend::Idempotent, false, t0, deadline, budget);
    let (steps, took) = simulate(f, t0, Duration::from_millis(1), endless);
    assert_eq!(steps.last(), Some(&Step::GiveUp(Stop::Deadline)));
    assert!(took <= Duration::from_secs(30), "{took:?}");
    assert!(took >= Duration::from_secs(29), "{took:?}");
}

#[test]
fn an_election_a_class_chosen_address_claims_ends_at_the_budget() {
    let t0 = Instant::now();
    let endless = |_, _| Verdict::NotServing(Reason::NoActiveNode);
    let f = Failover::new(
        Resend::Idempotent,
        false,
        t0,
        t0 + Duration::from_secs(30),
        Duration::from_secs(5),
    )
    .without_election_waits();
    let (steps, took) = simulate(f, t0, Duration::from_millis(1), endless);
    assert_eq!(steps.last(), Some(&Step::GiveUp(Stop::Budget)));
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

#[test]
fn a_sealed_cluster_is_not_an_election() {
    let t0 = Instant::now();
    let f = Failover::new(
        Resend::Idempotent,
        false,
        t0,
        t0 + Duration::from_secs(60),
        Duration::from_secs(3),
    );
    let (steps, took) = simulate(f, t0, Duration::from_millis(1), |_, _| {
        Verdict::NotServing(Reason::Sealed)
    });
    assert_eq!(steps.last(), Some(&Step::GiveUp(Stop::Budget)));
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn what_may_have_been_processed_is_not_resent_unless_idempotent() {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(60);
    let budget = Duration::from_secs(10);
    // A login: a broken exchange ends it at once.
    let mut f = Failover::new(Resend::Login, false, t0, deadline, budget);
    assert_eq!(f.next(t0, || vec![0, 1]), Step::Send(0));
    assert_eq!(f.observe(seen(Verdict::Ambiguous)), Next::Done);
    // A read: resent at most MAX_AMBIGUOUS times, then it stands.
    let mut f = Failover::new(Resend::Idempotent, false, t0, deadline, budget);
    for i in 0..MAX_AMBIGUOUS as usize {
        assert_eq!(f.next(t0, || vec![0, 1, 2]), Step::Send(i));
        assert_eq!(f.observe(seen(Verdict::Ambiguous)), Next::Retry(Some(Reason::Error)));
    }
    assert_eq!(f.next(t0, || vec![0, 1, 2]), Step::Send(2));
    assert_eq!(f.observe(seen(Verdict::Ambiguous)), Next::Done);
    assert!(f.processed());
    // A timeout is never resent; a write goes elsewhere only unprocessed.
    let mut f = Failover::new(Resend::OnlyUnprocessed, false, t0, deadline, budget);
    f.next(t0, || vec![0, 1]);
    assert_eq!(
        f.observe(seen(Verdict::NotServing(Reason::Sealed))),
        Next::Retry(Some(Reason::Sealed))
    );
    f.next(t0, || vec![0, 1]);
    assert_eq!(f.observe(seen(Verdict::TimedOut)), Next::Done);
    assert!(!f.processed());
}

#[test]
fn refused_certificates_and_single_redirects_are_reported_at_once() {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(60);
    let budget = Duration::from_secs(10);
    let mut f = Failover::new(Resend::Idempotent, false, t0, deadline, budget);
    for i in 0..2 {
        assert_eq!(f.next(t0, || vec![0, 1]), Step::Send(i));
        f.observe(seen(Verdict::Unreached(Reason::TlsRefused)));
    }
    assert_eq!(f.next(t0, || vec![0, 1]), Step::GiveUp(Stop::TlsRefused));
    let mut f = Failover::new(Resend::Idempotent, true, t0, deadline, budget);
    f.next(t0, || vec![0]);
    let redirect = Seen {
        verdict: Verdict::NotServing(Reason::NoActiveNode),
        redirect: true,
        standby_refusal: false,
    };
    assert_eq!(f.observe(redirect), Next::Done);
    // A standby's refused login moves on without marking the node down.
    let mut f = Failover::new(Resend::Login, false, t0, deadline, budget);
    f.next(t0, || vec![0, 1]);
    let refusal = Seen {
        verdict: Verdict::Final,
        redirect: false,
        standby_refusal: true,
    };
    assert_eq!(f.observe(refusal), Next::Retry(None));
    assert_eq!(f.next(t0, || vec![0, 1]), Step::Send(1));
}

#[test]
fn no_attempt_starts_too_close_to_the_deadline() {
    let t0 = Instant::now();
    let mut f = Failover::new(
        Resend::Idempotent,
        false,
        t0,
        t0 + Duration::from_millis(300),
        Duration::from_secs(10),
    );
    assert_eq!(f.next(t0, || vec![0, 1]), Step::Send(0));
    f.observe(seen(Verdict::Unreached(Reason::Unreachable)));
    assert_eq!(
        f.next(t0 + Duration::from_millis(150), || vec![0, 1]),
        Step::GiveUp(Stop::Deadline)
    );
}

#[test]
fn attempts_keep_one_line_per_address() {
    let mut a = Attempts::default();
    a.add("http://n1", "refused".into());
    a.add("http://n2", "sealed".into());
    a.add("http://n1", "refused again".into());
    assert_eq!(a.total(), 3);
    assert_eq!(a.list()[0].answer, "refused again");
    assert_eq!(a.list()[0].count, 2);
    assert_eq!(a.list()[1].address, "http://n2");
}
