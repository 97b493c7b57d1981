//! The device side: the cameras' heartbeats shown and tracked (online,
//! offline, back), their SCS/UDS replies routed back to the connection that
//! asked, and the simulated camera the other tests lean on.

mod heartbeats;
mod replies;
mod simulated_camera;
