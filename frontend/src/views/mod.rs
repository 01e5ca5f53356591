//! The pages (one file per screen) and the pieces they share.

pub mod chart;
pub mod common;
pub mod compare;
pub mod control;
pub mod login;
pub mod run;
pub mod runs;
pub mod tails;
