//! kube-sim's test suite: every semantic it implements, driven through kube-rs over
//! HTTPS exactly as a controller would use a real cluster.

mod admission;
mod api;
mod cluster;
mod common;
mod crd;
mod tokenreview;
mod watch;
mod zero_values;
