//! Framework adapters: they only translate a [`Processor`](crate::Processor)'s
//! [`Outcome`](crate::Outcome) into their framework's response.

#[cfg(feature = "actix-web")]
pub mod actix;
#[cfg(feature = "axum")]
pub mod axum;
mod common;
