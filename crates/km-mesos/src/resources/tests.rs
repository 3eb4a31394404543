use km_resources::{Range, parse_resources};
use proptest::prelude::*;

use super::*;

fn scalar(name: &str, v: f64) -> v1::Resource {
    let mut r = v1::Resource {
        name: name.into(),
        scalar: Some(value::Scalar { value: v }),
        ..Default::default()
    };
    r.set_type(value::Type::Scalar);
    r
}

fn reservation(role: &str, ty: reservation_info::Type) -> v1::resource::ReservationInfo {
    let mut info = v1::resource::ReservationInfo { role: Some(role.into()), ..Default::default() };
    info.set_type(ty);
    info
}

fn dynamic(role: &str, principal: &str) -> Reservation {
    Reservation {
        role: role.into(),
        kind: ReservationKind::Dynamic,
        principal: Some(principal.into()),
        labels: vec![("a".into(), "1".into()), ("k".into(), String::new())],
    }
}

fn with_stack(r: Resource, stack: Vec<Reservation>) -> Resource {
    Resource { reservations: stack, ..r }
}

#[test]
fn pre_refinement_fields_become_a_stack() {
    let unreserved = from_proto(&scalar("cpus", 1.0)).unwrap();
    assert_eq!(unreserved, Resource::scalar("cpus", 1.0));
    let star = v1::Resource { role: Some("*".into()), ..scalar("cpus", 1.0) };
    assert_eq!(from_proto(&star).unwrap(), unreserved);

    let stat = v1::Resource { role: Some("prod".into()), ..scalar("cpus", 1.0) };
    assert_eq!(from_proto(&stat).unwrap(), Resource::scalar("cpus", 1.0).reserved_for("prod"));

    let dyn_ = v1::Resource {
        role: Some("prod".into()),
        reservation: Some(v1::resource::ReservationInfo {
            principal: Some("ops".into()),
            labels: Some(v1::Labels {
                labels: vec![
                    v1::Label { key: "k".into(), value: None },
                    v1::Label { key: "a".into(), value: Some("1".into()) },
                ],
            }),
            ..Default::default()
        }),
        ..scalar("cpus", 1.0)
    };
    assert_eq!(
        from_proto(&dyn_).unwrap(),
        with_stack(Resource::scalar("cpus", 1.0), vec![dynamic("prod", "ops")]),
        "labels are sorted, a missing label value reads as empty"
    );
}

#[test]
fn both_formats_read_the_same() {
    let pre = v1::Resource { role: Some("prod".into()), ..scalar("mem", 64.0) };
    let post = v1::Resource {
        reservations: vec![reservation("prod", reservation_info::Type::Static)],
        ..scalar("mem", 64.0)
    };
    let endpoint = v1::Resource { role: Some("prod".into()), ..post.clone() };
    let read = from_proto(&post).unwrap();
    assert_eq!(from_proto(&pre).unwrap(), read);
    assert_eq!(from_proto(&endpoint).unwrap(), read);
    assert_eq!(read.role(), "prod");
}

#[test]
fn refined_reservations_go_down_the_role_tree() {
    let refined = v1::Resource {
        reservations: vec![
            reservation("eng", reservation_info::Type::Static),
            reservation("eng/web", reservation_info::Type::Dynamic),
        ],
        ..scalar("cpus", 2.0)
    };
    let r = from_proto(&refined).unwrap();
    assert_eq!(r.role(), "eng/web");
    assert_eq!(r.reservations[0].kind, ReservationKind::Static);
    assert_eq!(r.reservations[1].kind, ReservationKind::Dynamic);

    let mut bad = refined.clone();
    bad.reservations[1].set_type(reservation_info::Type::Static);
    assert_eq!(
        from_proto(&bad),
        Err(ResourceError::StaticRefinement { name: "cpus".into(), role: "eng/web".into() })
    );
    let mut bad = refined.clone();
    bad.reservations[1].role = Some("engine".into());
    assert_eq!(
        from_proto(&bad).unwrap_err().to_string(),
        "resource 'cpus': role 'engine' does not refine the reservation for 'eng'"
    );
    let bad = v1::Resource { role: Some("eng/web".into()), ..refined };
    assert!(matches!(from_proto(&bad), Err(ResourceError::RoleMismatch { .. })));
}

#[test]
fn bad_reservations_are_refused() {
    let post = |info: v1::resource::ReservationInfo| v1::Resource {
        reservations: vec![info],
        ..scalar("cpus", 1.0)
    };
    let no_role = v1::resource::ReservationInfo {
        role: None,
        ..reservation("x", reservation_info::Type::Static)
    };
    assert_eq!(
        from_proto(&post(no_role)),
        Err(ResourceError::ReservationWithoutRole { name: "cpus".into(), index: 0 })
    );
    let no_type = v1::resource::ReservationInfo {
        r#type: None,
        ..reservation("x", reservation_info::Type::Static)
    };
    assert_eq!(
        from_proto(&post(no_type)).unwrap_err().to_string(),
        "resource 'cpus': reservation 0 has no type (STATIC or DYNAMIC)"
    );
    let unknown = reservation("x", reservation_info::Type::Unknown);
    assert!(matches!(
        from_proto(&post(unknown)),
        Err(ResourceError::ReservationWithoutType { .. })
    ));
    let star = reservation("*", reservation_info::Type::Static);
    assert_eq!(
        from_proto(&post(star)),
        Err(ResourceError::StarReservation { name: "cpus".into() })
    );
    let bad_role = reservation("a b", reservation_info::Type::Static);
    assert_eq!(
        from_proto(&post(bad_role)).unwrap_err().to_string(),
        "resource 'cpus': role \"a b\" contains a space"
    );
    let mismatch = v1::Resource {
        role: Some("dev".into()),
        ..post(reservation("prod", reservation_info::Type::Static))
    };
    assert_eq!(
        from_proto(&mismatch).unwrap_err().to_string(),
        "resource 'cpus': 'role' is 'dev' but 'reservations' reserve it for 'prod'"
    );
    let star_dynamic = v1::Resource {
        role: Some("*".into()),
        reservation: Some(Default::default()),
        ..scalar("cpus", 1.0)
    };
    assert!(matches!(from_proto(&star_dynamic), Err(ResourceError::StarReservation { .. })));
    let bad_pre = v1::Resource { role: Some("/x".into()), ..scalar("cpus", 1.0) };
    assert!(matches!(from_proto(&bad_pre), Err(ResourceError::InvalidRole { .. })));
    let bad_alloc = v1::Resource {
        allocation_info: Some(v1::resource::AllocationInfo { role: Some("-x".into()) }),
        ..scalar("cpus", 1.0)
    };
    assert!(matches!(from_proto(&bad_alloc), Err(ResourceError::InvalidRole { .. })));
}

#[test]
fn bad_values_are_refused_with_the_resource_named() {
    let msg = |r: v1::Resource| from_proto(&r).unwrap_err().to_string();
    assert_eq!(msg(scalar("", 1.0)), "a resource of type SCALAR has an empty name");
    assert_eq!(
        msg(v1::Resource { r#type: 9, ..scalar("", 1.0) }),
        "a resource of type 9 has an empty name"
    );
    assert_eq!(
        msg(v1::Resource { r#type: 9, ..scalar("cpus", 1.0) }),
        "resource 'cpus' has an unknown value type 9"
    );
    assert_eq!(
        msg(scalar("cpus", -1.0)),
        "resource 'cpus' has the scalar value -1; it must be finite and not negative"
    );
    assert!(matches!(from_proto(&scalar("cpus", f64::NAN)), Err(ResourceError::BadScalar { .. })));
    assert!(matches!(
        from_proto(&scalar("cpus", f64::INFINITY)),
        Err(ResourceError::BadScalar { .. })
    ));
    assert_eq!(
        msg(v1::Resource { scalar: None, ..scalar("cpus", 1.0) }),
        "resource 'cpus' is of type SCALAR but has no SCALAR value"
    );
    let mut ranges = scalar("ports", 0.0);
    ranges.set_type(value::Type::Ranges);
    assert!(matches!(
        from_proto(&ranges),
        Err(ResourceError::MissingValue { type_name: "RANGES", .. })
    ));
    ranges.ranges = Some(value::Ranges {
        range: vec![value::Range { begin: 1, end: 2 }, value::Range { begin: 9, end: 5 }],
    });
    assert_eq!(msg(ranges), "resource 'ports' has the range 9-5, which ends before it begins");
    let mut set = scalar("disks", 0.0);
    set.set_type(value::Type::Set);
    assert!(matches!(from_proto(&set), Err(ResourceError::MissingValue { type_name: "SET", .. })));
    let mut text = scalar("t", 0.0);
    text.set_type(value::Type::Text);
    assert_eq!(msg(text), "resource 't' has a TEXT value; resources are SCALAR, RANGES or SET");
    assert_eq!(
        msg(v1::Resource { disk: Some(Default::default()), ..scalar("disk", 1.0) }),
        "resource 'disk' has 'disk', which km does not support"
    );
    assert!(matches!(
        from_proto(&v1::Resource { shared: Some(Default::default()), ..scalar("disk", 1.0) }),
        Err(ResourceError::Unsupported { field: "shared", .. })
    ));
    assert!(matches!(
        from_proto(&v1::Resource { provider_id: Some(Default::default()), ..scalar("disk", 1.0) }),
        Err(ResourceError::Unsupported { field: "provider_id", .. })
    ));
}

#[test]
fn zero_is_a_value_and_extra_decimals_round() {
    assert_eq!(from_proto(&scalar("cpus", 0.0)).unwrap().as_scalar(), Some(Scalar::ZERO));
    assert_eq!(
        from_proto(&scalar("cpus", 0.12345)).unwrap().as_scalar(),
        Some(Scalar::from_milli(123))
    );
}

#[test]
fn the_wire_forms() {
    let unreserved = Resource::scalar("cpus", 1.0);
    let stat = Resource::scalar("mem", 64.0).reserved_for("prod");
    let dyn_ = with_stack(Resource::scalar("disk", 10.0), vec![dynamic("prod", "ops")]);
    let refined = with_stack(
        Resource::scalar("cpus", 2.0),
        vec![Reservation::new("eng"), dynamic("eng/web", "ops")],
    );

    // Pre-refinement: `role` always, `reservation` for a dynamic one, never `reservations`.
    let pre = |r: &Resource| to_proto(r, Format::PreRefinement);
    assert_eq!(pre(&unreserved).role.as_deref(), Some("*"));
    assert_eq!(pre(&stat).role.as_deref(), Some("prod"));
    assert_eq!(pre(&stat).reservation, None);
    let d = pre(&dyn_);
    assert_eq!(d.role.as_deref(), Some("prod"));
    let info = d.reservation.as_ref().unwrap();
    assert_eq!(
        (info.principal.as_deref(), info.role.as_deref(), info.r#type),
        (Some("ops"), None, None)
    );
    let labels = &info.labels.as_ref().unwrap().labels;
    assert_eq!(labels[0], v1::Label { key: "a".into(), value: Some("1".into()) });
    assert_eq!(labels[1], v1::Label { key: "k".into(), value: None }, "empty values go out absent");
    assert_eq!(pre(&refined).role.as_deref(), Some("eng/web"), "innermost reservation");
    assert!([&unreserved, &stat, &dyn_, &refined].iter().all(|r| pre(r).reservations.is_empty()));

    // Post-refinement: only the stack.
    let post = |r: &Resource| to_proto(r, Format::PostRefinement);
    for r in [&unreserved, &stat, &dyn_, &refined] {
        let p = post(r);
        assert_eq!((p.role.as_deref(), &p.reservation), (None, &None), "{r}");
        assert_eq!(p.reservations.len(), r.reservations.len(), "{r}");
    }
    assert_eq!(post(&stat).reservations[0], reservation("prod", reservation_info::Type::Static));
    assert_eq!(post(&refined).reservations[1].r#type(), reservation_info::Type::Dynamic);

    // Endpoint: both, except that refined stacks have no single role.
    let ep = |r: &Resource| to_proto(r, Format::Endpoint);
    assert_eq!(
        (ep(&unreserved).role.as_deref(), ep(&unreserved).reservations.len()),
        (Some("*"), 0)
    );
    assert_eq!((ep(&stat).role.as_deref(), ep(&stat).reservations.len()), (Some("prod"), 1));
    assert!(ep(&dyn_).reservation.is_some());
    assert_eq!((ep(&refined).role.as_deref(), ep(&refined).reservations.len()), (None, 2));

    assert_eq!(Format::for_framework(true), Format::PostRefinement);
    assert_eq!(Format::for_framework(false), Format::PreRefinement);
}

#[test]
fn allocation_and_revocability_come_from_the_resource() {
    let r = Resource { revocable: true, ..Resource::scalar("cpus", 1.0).allocated_to("prod") };
    for format in [Format::PreRefinement, Format::PostRefinement, Format::Endpoint] {
        let p = to_proto(&r, format);
        assert_eq!(p.allocation_info.and_then(|a| a.role).as_deref(), Some("prod"));
        assert!(p.revocable.is_some());
        assert_eq!(from_proto(&to_proto(&r, format)).unwrap(), r);
    }
    let plain = to_proto(&Resource::scalar("cpus", 1.0), Format::PostRefinement);
    assert!(plain.allocation_info.is_none() && plain.revocable.is_none());
}

#[test]
fn values_on_the_wire() {
    let rs = parse_resources("cpus:1.5;ports:[31000-31005,31007];disks:{b,a}").unwrap();
    let p = resources_to_proto(&rs, Format::PostRefinement);
    assert_eq!((p[0].r#type(), p[0].scalar.map(|s| s.value)), (value::Type::Scalar, Some(1.5)));
    assert_eq!(p[1].r#type(), value::Type::Ranges);
    assert_eq!(
        p[1].ranges.as_ref().unwrap().range,
        [value::Range { begin: 31000, end: 31005 }, value::Range { begin: 31007, end: 31007 }]
    );
    assert_eq!(
        (p[2].r#type(), &p[2].set.as_ref().unwrap().item[..]),
        (value::Type::Set, &["a".to_owned(), "b".to_owned()][..])
    );
    let back = resources_from_proto(&p).unwrap();
    assert_eq!(back, rs.into_iter().collect::<Resources>());
}

#[test]
fn attributes_both_ways() {
    let attrs = km_resources::parse_attributes("rack:r1;level:3.5;ids:[1-5,7];tags:{y,x}").unwrap();
    let p: Vec<v1::Attribute> = attrs.iter().map(attribute_to_proto).collect();
    assert_eq!(
        (p[0].r#type(), p[0].text.as_ref().map(|t| t.value.as_str())),
        (value::Type::Text, Some("r1"))
    );
    assert_eq!((p[1].r#type(), p[1].scalar.map(|s| s.value)), (value::Type::Scalar, Some(3.5)));
    assert_eq!(p[2].ranges.as_ref().unwrap().range.len(), 2);
    assert_eq!(p[3].set.as_ref().unwrap().item, ["x", "y"]);
    let back: Vec<Attribute> = p.iter().map(|a| attribute_from_proto(a).unwrap()).collect();
    assert_eq!(back, attrs);

    let mut bad = p[1].clone();
    bad.scalar = Some(value::Scalar { value: f64::NAN });
    assert!(matches!(attribute_from_proto(&bad), Err(AttributeError::BadScalar { .. })));
    bad.scalar = None;
    assert_eq!(
        attribute_from_proto(&bad).unwrap_err().to_string(),
        "attribute 'level' is of type SCALAR but has no SCALAR value"
    );
    let mut text = p[0].clone();
    text.text = None;
    assert!(matches!(
        attribute_from_proto(&text),
        Err(AttributeError::MissingValue { type_name: "TEXT", .. })
    ));
    assert_eq!(
        attribute_from_proto(&v1::Attribute { name: String::new(), ..p[0].clone() }),
        Err(AttributeError::EmptyName)
    );
    assert!(matches!(
        attribute_from_proto(&v1::Attribute { r#type: 42, ..p[0].clone() }),
        Err(AttributeError::UnknownType { number: 42, .. })
    ));
    let mut backwards = p[2].clone();
    backwards.ranges = Some(value::Ranges { range: vec![value::Range { begin: 3, end: 2 }] });
    assert!(matches!(attribute_from_proto(&backwards), Err(AttributeError::BackwardsRange { .. })));
}

#[test]
fn state_objects_sum_over_roles() {
    let mut rs: Resources = parse_resources(
        "cpus:2;cpus(web):1;mem:10;ports:[1-2];ports(web):[5-5];disks:{a};disks(web):{b};custom:0.5",
    )
    .unwrap()
    .into_iter()
    .collect();
    rs.push(Resource { revocable: true, ..Resource::scalar("cpus", 8.0) });
    assert_eq!(
        state_object(&rs),
        json!({
            "cpus": 3.0, "gpus": 0.0, "mem": 10.0, "disk": 0.0, "custom": 0.5,
            "ports": "[1-2, 5-5]", "disks": "{a, b}",
        })
    );
    assert_eq!(
        state_object(&Resources::new()),
        json!({"cpus": 0.0, "gpus": 0.0, "mem": 0.0, "disk": 0.0})
    );
    let attrs = km_resources::parse_attributes("rack:r1;level:3;ids:[1-5,7];tags:{y,x}").unwrap();
    assert_eq!(
        attributes_state_object(&attrs),
        json!({"rack": "r1", "level": 3.0, "ids": "[1-5, 7-7]", "tags": "{x, y}"})
    );
}

/// A valid resource of the model: a reservation stack that Mesos would take
/// (refinements dynamic and below their parent), sorted labels without empty
/// values (those go out as absent), any allocation role, revocable or not.
fn resource() -> impl Strategy<Value = Resource> {
    let value = prop_oneof![
        (0i64..10_000_000).prop_map(|m| Value::Scalar(Scalar::from_milli(m))),
        prop::collection::vec((0u64..100_000, 0u64..100), 0..4).prop_map(|v| {
            Value::Ranges(Ranges::from_pairs(v.into_iter().map(|(b, l)| (b, b + l))))
        }),
        prop::collection::btree_set("[a-z0-9]{1,4}", 0..4).prop_map(Value::Set),
    ];
    let reservation = |role: String, kind: ReservationKind| {
        (
            proptest::option::of("[a-z]{1,5}"),
            prop::collection::btree_map("[a-z]{1,3}", "[a-z]{1,3}", 0..3),
        )
            .prop_map(move |(principal, labels)| {
                // Static reservations carry no principal or labels (the agent sets them).
                let dynamic = kind == ReservationKind::Dynamic;
                Reservation {
                    role: role.clone(),
                    kind,
                    principal: principal.filter(|_| dynamic),
                    labels: if dynamic { labels.into_iter().collect() } else { Vec::new() },
                }
            })
    };
    let stack = (0usize..4, any::<bool>()).prop_flat_map(move |(depth, first_static)| {
        let roles: Vec<String> =
            (0..depth).map(|i| ["eng", "web", "a", "b"][..=i].join("/")).collect();
        roles
            .into_iter()
            .enumerate()
            .map(|(i, role)| {
                let kind = if i == 0 && first_static {
                    ReservationKind::Static
                } else {
                    ReservationKind::Dynamic
                };
                reservation(role, kind)
            })
            .collect::<Vec<_>>()
    });
    (
        prop::sample::select(vec!["cpus", "mem", "ports", "disks", "gpus", "x"]),
        value,
        stack,
        proptest::option::of(prop::sample::select(vec!["*", "eng", "eng/web"])),
        any::<bool>(),
    )
        .prop_map(|(name, value, reservations, alloc, revocable)| Resource {
            name: name.into(),
            value,
            reservations,
            allocation_role: alloc.map(str::to_owned),
            revocable,
        })
}

proptest! {
    #[test]
    fn round_trip_post_refinement_and_endpoint(r in resource()) {
        for format in [Format::PostRefinement, Format::Endpoint] {
            let wire = to_proto(&r, format);
            prop_assert_eq!(from_proto(&wire), Ok(r.clone()));
        }
    }

    #[test]
    fn round_trip_pre_refinement_when_not_refined(r in resource()) {
        let wire = to_proto(&r, Format::PreRefinement);
        let back = from_proto(&wire).unwrap();
        if r.reservations.len() <= 1 {
            prop_assert_eq!(back, r);
        } else {
            // Only the innermost reservation survives the old format.
            prop_assert_eq!(back.role(), r.role());
            prop_assert_eq!(back.reservations.len(), 1);
        }
    }

    #[test]
    fn the_wire_is_a_fixed_point(r in resource()) {
        // Reading normalises; writing what was read gives the same bytes again.
        for format in [Format::PreRefinement, Format::PostRefinement, Format::Endpoint] {
            let once = to_proto(&r, format);
            let twice = to_proto(&from_proto(&once).unwrap(), format);
            prop_assert_eq!(once, twice);
        }
    }

    #[test]
    fn ranges_of_any_shape_read_as_normalised(pairs in prop::collection::vec((0u64..1000, 0u64..1000), 0..8)) {
        let mut wire = scalar("ports", 0.0);
        wire.set_type(value::Type::Ranges);
        wire.ranges = Some(value::Ranges {
            range: pairs.iter().map(|&(a, b)| value::Range { begin: a.min(b), end: a.max(b) }).collect(),
        });
        let read = from_proto(&wire).unwrap();
        let ranges = read.as_ranges().unwrap();
        for &(a, b) in &pairs {
            prop_assert!(ranges.contains(a) && ranges.contains(b));
        }
        prop_assert!(ranges.ranges().windows(2).all(|w: &[Range]| w[0].end + 1 < w[1].begin));
    }
}
