//! Integration tests of the pod runtimes against the real system: the
//! native runtime (namespaces, cgroups; needs root) and the Docker engine
//! (needs a running engine; the test image is built by
//! `tests/images/build.sh`). Each test uses its own root directory, cgroup
//! parent and owner label, and removes everything it created on drop.

mod docker;
mod native;
mod support;
