//! The [`Handler`](crate::consumer::Handler) that delivers batches to an HTTP endpoint.
