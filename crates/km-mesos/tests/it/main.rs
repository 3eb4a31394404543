//! Integration tests of km-mesos's HTTP clients against in-process fakes of
//! the Mesos master and agent endpoints that behave as real Mesos does on its
//! v1 HTTP APIs (RecordIO event streams and heartbeats, the scheduler,
//! executor and operator APIs): what the clients send, exactly, and how they
//! handle what comes back.

/// Runs an `async fn(ContentType)` scenario as two tests, `json` and
/// `protobuf`, in a module named after it. (Defined before the modules so
/// that they see it.)
macro_rules! both {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn json() {
                super::$scenario(km_mesos::ContentType::Json).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn protobuf() {
                super::$scenario(km_mesos::ContentType::Protobuf).await;
            }
        }
    };
}

mod codec;
mod executor;
mod fake;
mod operator;
mod scheduler;

/// Bytes as lower-case hex pairs separated by spaces (`0a 01 75`), the form
/// the expected bytes are written in here.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}
