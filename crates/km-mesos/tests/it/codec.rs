//! Regressions found by the `mesos_json` fuzz target (see `fuzz/README.md`).

use std::collections::BTreeMap;

use km_mesos::ContentType;
use km_mesos::v1::{self, scheduler};

use crate::hex;

/// A task whose `limits` map holds a zero scalar (`Value.Scalar.value` is `required`).
fn task_with_zero_limit() -> v1::TaskInfo {
    v1::TaskInfo {
        name: "t".into(),
        task_id: v1::TaskId { value: "t".into() },
        agent_id: v1::AgentId { value: "a".into() },
        limits: BTreeMap::from([("cpus".to_owned(), v1::value::Scalar { value: 0.0 })]),
        ..Default::default()
    }
}

// The fuzz target's minimised input: decodes, but its own JSON output does not.
#[test]
fn zero_scalar_in_a_map_survives_json() {
    let input = br#"{"type":"ACCEPT","accept":{"offer_ids":[{"value":"O1"}],"operations":[{"type":"LAUNCH","launch":{"task_infos":[{"name":"t","task_id":{"value":"t"},"agent_id":{"value":"a"},"limits":{"cpus":{"value":0.0}}}]}}]}}"#;
    let call: scheduler::Call = km_mesos::json::from_slice(input).expect("valid input");
    let text = km_mesos::json::to_vec(&call);
    let again = km_mesos::json::from_slice::<scheduler::Call>(&text)
        .unwrap_or_else(|e| panic!("own output refused: {e}\n{}", String::from_utf8_lossy(&text)));
    assert_eq!(again, call);

    let json = km_mesos::json::to_value(&task_with_zero_limit());
    assert_eq!(json["limits"]["cpus"]["value"].as_f64(), Some(0.0), "{json}");
}

// What a C++ peer writes for `limits {cpus: 0.0}`: the map entry's value
// carries the required field explicitly. km must accept it, and must write it
// the same way (C++ rejects a map value lacking a required field).
#[test]
fn zero_scalar_in_a_map_survives_protobuf() {
    let entry = "7a 11 0a 04 63 70 75 73 12 09 09 00 00 00 00 00 00 00 00";
    let wire: Vec<u8> = format!("0a 01 74 12 03 0a 01 74 1a 03 0a 01 61 {entry}")
        .split(' ')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    let decoded = ContentType::Protobuf.decode::<v1::TaskInfo>(&wire);
    assert_eq!(decoded.ok(), Some(task_with_zero_limit()), "a valid C++ encoding is refused");

    let encoded = ContentType::Protobuf.encode(&task_with_zero_limit());
    assert!(
        hex(&encoded).contains(entry),
        "map value written without its required field: {}",
        hex(&encoded)
    );
}

// Mesos JSON doubles must be read as the nearest double, as C++ (and Rust's
// `str::parse`) read them; otherwise a value changes on every round trip.
// Found by the fuzz target with a long `failover_timeout` / `timestamp`.
#[test]
fn json_doubles_are_read_exactly() {
    let long = format!("1700066666{}600000.25", "6".repeat(66));
    let texts = [
        long.as_str(),
        "88888888888888888888888888888888888888888888888888888888888888888888888888888888888888888888888888888888888604800.0",
        "1.7000666666666665e+84",
        "8.88888888888889e+109",
        "1700000000.1234567",
        "0.30000000000000004",
        "604800.0",
        "15.0",
    ];
    for text in texts {
        let body =
            format!(r#"{{"task_id":{{"value":"t"}},"state":"TASK_RUNNING","timestamp":{text}}}"#);
        let status: v1::TaskStatus =
            km_mesos::json::from_slice(body.as_bytes()).expect("valid status");
        let got = status.timestamp.expect("timestamp set");
        let want: f64 = text.parse().expect("a number");
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{text}: read {got:e}, nearest double is {want:e}"
        );
        let again: v1::TaskStatus =
            km_mesos::json::from_slice(&km_mesos::json::to_vec(&status)).unwrap();
        assert_eq!(
            again.timestamp.map(f64::to_bits),
            Some(got.to_bits()),
            "{text}: changed on a round trip"
        );
    }
}
