//! jwkd: a key management and rotation daemon for service-to-service JWTs.
//!
//! It generates signing keys, rotates them on a cron schedule with each next key
//! published before it signs and each retired key kept until every token it
//! signed has expired, stores them durably, and serves the JWKS.
//!
//! # Layout
//! - [`cli`], [`commands`]: the verbs of the command line.
//! - [`daemon`]: what `serve` runs, wired once: listeners, rotator, reload;
//!   the integration tests run it in process on a manual clock.
//! - [`config`]: the config file, validated in one pass.
//! - [`duration`]: durations as the config writes them (`1h30m`).
//! - [`clock`]: the wall clock behind a trait, and a manual clock for tests.
//! - [`keys`]: key generation, JWK thumbprints, x5c certificates.
//! - [`keyset`]: the keyset and its stored document.
//! - [`schedule`]: cron expressions and their fire times.
//! - [`timeline`]: key states and every change to them; pure, no I/O, no clock.
//! - [`generator`]: makes the real keys the timeline asks for.
//! - [`store`]: durable backends with compare-and-swap writes.
//! - [`operation`]: a change to the stored keyset: decide, compare-and-swap,
//!   re-read and decide again on a lost race; for the rotator and the CLI verbs.
//! - [`rotator`]: the one writer while serving; decides, stores, then publishes.
//! - [`state`]: the snapshots the rotator publishes for the HTTP handlers.
//! - [`http`]: the warp routes and server.
//! - [`throttle`]: the allowance of full credential checks per source and client.
//! - [`auth`]: client-secret hashing and the client authenticator.
//! - [`metrics`]: the Prometheus metrics.
//! - [`runtime`]: signals and systemd notifications.
//! - [`logging`]: the log subscriber and the journald line format.
//!
//! jwkd never publishes or signs with a key the store has not acknowledged, and
//! never repairs a stored document it cannot read.

#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod custody;
pub mod daemon;
pub mod duration;
#[doc(hidden)]
pub mod fuzzing;
pub mod generator;
pub mod http;
pub mod keys;
pub mod keyset;
pub mod kms;
pub mod logging;
pub mod metrics;
pub mod operation;
pub mod rotator;
pub mod runtime;
pub mod schedule;
pub mod state;
pub mod store;
pub mod throttle;
pub mod timeline;
