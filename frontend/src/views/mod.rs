//! The pages (one file per screen) and the pieces they share.

pub mod alert_form;
pub mod alerts;
pub mod alerts_html;
pub mod chart;
pub mod common;
pub mod compare;
pub mod control;
pub mod job;
pub mod launch;
pub mod launch_form;
pub mod launch_html;
pub mod login;
pub mod media;
pub mod meta;
pub mod notify;
pub mod params;
pub mod queue;
pub mod run;
pub mod runs;
pub mod tails;
pub mod wire;
