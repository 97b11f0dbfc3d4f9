//! JSON bodies of the remoting calls (rocketmq-remoting.md sections 3-5, 7.9).
//!
//! Readers are lenient, because brokers speak fastjson: they accept its non-standard forms
//! (unquoted integer keys, objects as map keys), `null` where a value is expected, and unknown
//! keys. Writers emit exactly the Java shape, because the Rust broker rejects bodies missing any
//! key it expects (section 11.4).

mod fastjson;

pub mod consume_directly;
pub mod consumer_list;
pub mod heartbeat;
pub mod lock;
pub mod offset_table;
pub mod route;
pub mod running_info;

use serde::{Deserialize, Deserializer};

/// Deserialises `null` (or an absent key, with `#[serde(default)]`) as `T::default()`; the Rust
/// name server writes `null` for empty fields that Java omits.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
