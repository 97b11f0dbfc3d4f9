//! Response classification: what an HTTP answer means for each message of the request.
//!
//! Pure: status code, headers, body bytes and the wall-clock `now` (for `Retry-After` dates) in,
//! per-message [`Outcome`]s out, plus whether the answer counts against the endpoint's health
//! (circuit breaker) and whether it asks to pause the endpoint.
//!
//! Rules (architecture.md section 5):
//! - a code in the success class (default 2xx) is `Success` for every message unless the JSON
//!   body says otherwise: `{"status": "SUCCESS"|"RETRY"|"DROP"}` for the whole request
//!   (Dapr-compatible) or `{"statuses": [{"id"|"entryId": msgId, "status": ...}]}` per message,
//!   where a message missing from `statuses` is `RETRY` (nothing is acknowledged by omission);
//!   a CloudEvent forwarded as the producer wrote it may also be named by its own `id` (see
//!   [`MessageIds`]);
//!   keys match in any case (as Dapr's Go decoder does), and a body that starts with `{`
//!   (after a UTF-8 byte order mark and whitespace) but is not JSON, or has a `status` or
//!   `statuses` of the wrong type, is `Success` as in Dapr (with a reason for the log);
//! - other codes map through [`StatusClasses`]; defaults: 408, 425, 429, 5xx retry; 400, 404,
//!   410, 413, 415, 422 drop (to the DLQ, never lost); other 4xx and 3xx retry;
//! - 429/503 with a valid `Retry-After` is `Later` for every message (no reconsume attempt spent)
//!   and pauses the endpoint, capped; a cap of zero ignores the header (the status's class
//!   decides);
//! - timeouts and transport errors retry; they, 5xx, 408 and 429 count as endpoint failures.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, CONTENT_ENCODING, RETRY_AFTER};
use serde_json::Value;

use crate::consumer::Outcome;

/// The smallest pause a `Retry-After` produces: the header has one-second granularity, and a
/// zero pause would let a throttling endpoint spin the engine in a hot loop.
const RETRY_AFTER_FLOOR: Duration = Duration::from_secs(1);

/// The highest RocketMQ delay level an answer may ask for (levels are 1..=18 by default).
const MAX_DELAY_LEVEL: i64 = 18;

/// What a status code means for the messages of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered (subject to the body's `status`/`statuses`).
    Success,
    /// Not delivered; consume again later (spends a reconsume attempt).
    Retry,
    /// Never deliverable; hand to the DLQ.
    Drop,
}

/// Matches status codes: one code (`404`) or a class (`4xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusPattern {
    /// Exactly this code.
    Code(u16),
    /// Every code whose first digit is this (1..=5).
    Class(u8),
}

impl StatusPattern {
    /// Whether `code` matches.
    pub fn matches(self, code: u16) -> bool {
        match self {
            Self::Code(c) => c == code,
            Self::Class(class) => code / 100 == u16::from(class),
        }
    }
}

/// Why a status pattern did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid status pattern {input:?}: expected a code 100..=599 or a class such as 4xx")]
pub struct StatusPatternError {
    /// The text that was refused.
    pub input: String,
}

impl FromStr for StatusPattern {
    type Err = StatusPatternError;

    /// Parses `"404"` or `"4xx"` (case-insensitive `x`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || StatusPatternError {
            input: s.to_owned(),
        };
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        if let Some(digit) = lower.strip_suffix("xx") {
            let class: u8 = digit.parse().map_err(|_| err())?;
            return if (1..=5).contains(&class) && digit.len() == 1 {
                Ok(Self::Class(class))
            } else {
                Err(err())
            };
        }
        let code: u16 = t.parse().map_err(|_| err())?;
        if (100..=599).contains(&code) {
            Ok(Self::Code(code))
        } else {
            Err(err())
        }
    }
}

impl fmt::Display for StatusPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(c) => write!(f, "{c}"),
            Self::Class(c) => write!(f, "{c}xx"),
        }
    }
}

/// Configurable mapping of status codes to verdicts.
///
/// An exact code in any list beats a class pattern in any list (so `drop: [4xx]` with
/// `retry: [429]` retries 429); among equally specific matches `drop` beats `retry` beats
/// `success`. Codes matching nothing: 2xx success, everything else retry (never drop by default:
/// a drop must be asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusClasses {
    /// Codes that mean delivered (the body may still refine per message).
    pub success: Vec<StatusPattern>,
    /// Codes that mean consume again later.
    pub retry: Vec<StatusPattern>,
    /// Codes that mean send to the DLQ.
    pub drop: Vec<StatusPattern>,
}

impl Default for StatusClasses {
    fn default() -> Self {
        use StatusPattern::{Class, Code};
        Self {
            success: vec![Class(2)],
            retry: vec![Code(408), Code(425), Code(429), Class(5)],
            drop: [400, 404, 410, 413, 415, 422].map(Code).to_vec(),
        }
    }
}

impl StatusClasses {
    /// The verdict for `code`.
    pub fn verdict(&self, code: u16) -> Verdict {
        let lists = [
            (&self.drop, Verdict::Drop),
            (&self.retry, Verdict::Retry),
            (&self.success, Verdict::Success),
        ];
        for exact in [true, false] {
            for (list, verdict) in lists {
                let hit = list
                    .iter()
                    .any(|p| matches!(p, StatusPattern::Code(_)) == exact && p.matches(code));
                if hit {
                    return verdict;
                }
            }
        }
        if code / 100 == 2 {
            Verdict::Success
        } else {
            Verdict::Retry
        }
    }
}

/// A request that got no HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No complete answer within the per-request timeout.
    Timeout,
    /// The endpoint could not be reached: connecting (refused, DNS) or the TLS or HTTP handshake
    /// failed, or the connection closed before the request was written, so nothing was sent.
    Unreachable,
    /// Connected, but no usable answer: reset or closed after the request may have been
    /// written, or a malformed response. The request may have reached the application (it may
    /// even have crashed it), so it counts as the message's failure.
    Transport,
}

/// The meaning of one answer (or failure) for the messages of its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// One outcome per message of the request, in request order.
    pub outcomes: Vec<Outcome>,
    /// Whether the endpoint counts as healthy for the circuit breaker: it answered, and not with
    /// a 5xx, 408 or a 429 without a usable `Retry-After`.
    pub healthy: bool,
    /// `Retry-After` asked to pause the whole endpoint for this long (already capped).
    pub pause: Option<Duration>,
    /// Why a success-class body that looked like JSON could not be read (for the log; its
    /// messages count as accepted, as Dapr counts them).
    pub unread: Option<&'static str>,
    /// A success-class body was JSON that could not be read whole (for the log; its messages
    /// retry): it breaks off (the endpoint stopped mid-answer, or its `Content-Length` was
    /// short), or, compressed, it inflates past 1 MiB.
    pub broke_off: bool,
}

impl Answer {
    fn uniform(outcome: Outcome, count: usize, healthy: bool) -> Self {
        Self {
            outcomes: vec![outcome; count],
            healthy,
            pause: None,
            unread: None,
            broke_off: false,
        }
    }
}

/// The names a `statuses` answer may give the messages of a request.
#[derive(Debug, Clone, Copy)]
pub struct MessageIds<'a> {
    /// Each message's msgId, in request order: one per message.
    pub msg_ids: &'a [&'a str],
    /// (index in the request, id) of the other ids the receiver knows messages by
    /// (`EncodedRequest::event_ids`): a forwarded CloudEvent's own `id`, for instance, when the
    /// receiver never saw the msgId. A msgId match comes first; an index may be listed more
    /// than once.
    pub event_ids: &'a [(usize, String)],
}

impl<'a> MessageIds<'a> {
    /// Messages known by their msgIds only.
    pub fn new(msg_ids: &'a [&'a str]) -> Self {
        Self {
            msg_ids,
            event_ids: &[],
        }
    }
}

/// Classifies an HTTP answer to a request that carried the messages `ids` names (in order).
///
/// `now` is the wall clock, used only to turn a `Retry-After` HTTP date into a delay.
pub fn classify_response(
    classes: &StatusClasses,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    ids: MessageIds<'_>,
    retry_after_cap: Duration,
    now: SystemTime,
) -> Answer {
    let count = ids.msg_ids.len();
    // A server error, or the endpoint saying it timed out or is overloaded without saying for
    // how long (a usable `Retry-After` is handled below): counted against the circuit, so an
    // endpoint that throttles with a bare 429 opens it and stops spending attempts instead of
    // draining the topic into the DLQ.
    // 600-999 pass hyper too; counted as 5xx in the metrics, they count against the circuit
    // the same way.
    let healthy = !(status >= 500 || status == 408 || status == 429);
    // A zero cap means "ignore Retry-After", not "pause for zero": a zero pause would put every
    // message straight back and spin on a throttling endpoint without spending an attempt.
    if (status == 429 || status == 503) && !retry_after_cap.is_zero() {
        let pause = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now))
            .map(|after| {
                after
                    .max(RETRY_AFTER_FLOOR.min(retry_after_cap))
                    .min(retry_after_cap)
            });
        if let Some(after) = pause {
            return Answer {
                outcomes: vec![Outcome::Later { after }; count],
                // The endpoint said when to come back; the pause does that, and the circuit
                // (whose open time doubles) must not override it. A 503 still counts.
                healthy: status != 503,
                pause: Some(after),
                unread: None,
                broke_off: false,
            };
        }
    }
    match classes.verdict(status) {
        Verdict::Success => {
            let (outcomes, unread, broke_off) = match decoded_body(headers, body) {
                Decoded::Body(body) => body_outcomes(&body, ids),
                // As for JSON that cannot be read: the 2xx stands, and the reason is logged.
                Decoded::Unreadable(reason) => (vec![Outcome::Success; count], Some(reason), false),
                // As for a plain JSON answer over 1 MiB (`Inner::send`): the part not read may
                // have said RETRY, so nothing is acknowledged.
                Decoded::CutJson => (
                    vec![Outcome::Retry { delay_level: None }; count],
                    None,
                    true,
                ),
            };
            Answer {
                outcomes,
                healthy,
                pause: None,
                unread,
                broke_off,
            }
        }
        Verdict::Retry => Answer::uniform(Outcome::Retry { delay_level: None }, count, healthy),
        Verdict::Drop => Answer::uniform(Outcome::Drop, count, healthy),
    }
}

/// Classifies a request that got no answer: every message retries, and the endpoint counts as
/// failing. (The webhook turns retries into `Later` when the endpoint was unreachable or the
/// request was the probe of an open circuit; see `Inner::send`.)
pub fn classify_failure(failure: Failure, count: usize) -> Answer {
    // Every kind means the same to RocketMQ; the webhook defers unreachable ones (no attempt
    // spent) and keeps the distinction for metrics and logs.
    let _ = failure;
    Answer::uniform(Outcome::Retry { delay_level: None }, count, false)
}

/// A success answer's body, its content coding undone ([`decoded_body`]).
enum Decoded<'a> {
    Body(std::borrow::Cow<'a, [u8]>),
    /// Why it cannot be read: another coding, or a stream that does not inflate.
    Unreadable(&'static str),
    /// JSON that inflates past the 1 MiB read of any answer, or whose stream breaks off.
    CutJson,
}

/// The answer's body as the endpoint wrote it. Requests ask for `identity`, but a server may
/// compress anyway, and a `{"status": "RETRY"}` it gzipped must not pass for a plain success:
/// gzip and deflate are undone, to at most the 1 MiB read of any answer.
fn decoded_body<'a>(headers: &HeaderMap, body: &'a [u8]) -> Decoded<'a> {
    use std::io::Read as _;
    let mut codings = headers.get_all(CONTENT_ENCODING).iter();
    let coding = codings
        .next()
        .map(|v| v.to_str().unwrap_or("?").trim())
        .unwrap_or_default();
    if codings.next().is_some() {
        // Several header lines are several codings, applied in turn.
        return Decoded::Unreadable("the answer is compressed with more than one coding");
    }
    let limit = u64::try_from(super::MAX_ANSWER_BYTES).unwrap_or(u64::MAX);
    let mut out = Vec::new();
    // An empty body has nothing to inflate, whatever the header says; nor has JSON text, which
    // no gzip or zlib stream starts with (a proxy that labels what it did not compress): read
    // as it is, its RETRY counts, where "does not inflate" would have acknowledged it.
    let read = if body.is_empty()
        || coding.is_empty()
        || coding.eq_ignore_ascii_case("identity")
        || json_text(body).starts_with(b"{")
    {
        return Decoded::Body(std::borrow::Cow::Borrowed(body));
    } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
        // Every member: a gzip stream may be several, and the first alone may cut the JSON.
        flate2::read::MultiGzDecoder::new(body)
            .take(limit + 1)
            .read_to_end(&mut out)
    } else if coding.eq_ignore_ascii_case("deflate") {
        // HTTP's "deflate" is the zlib format (RFC 9110, 8.4.1.2).
        flate2::read::ZlibDecoder::new(body)
            .take(limit + 1)
            .read_to_end(&mut out)
    } else {
        return Decoded::Unreadable(
            "the answer is compressed with a Content-Encoding other than gzip or deflate",
        );
    };
    match read {
        Ok(_) if out.len() <= super::MAX_ANSWER_BYTES => {
            Decoded::Body(std::borrow::Cow::Owned(out))
        }
        // JSON we could not read whole may have said RETRY: never acknowledge it. A stream
        // breaks off when the answer is cut at the read limit, or the server stops mid-stream;
        // what inflated before the break tells whether it was JSON.
        _ if json_text(&out).starts_with(b"{") => Decoded::CutJson,
        Ok(_) => Decoded::Unreadable("the compressed answer inflates past 1 MiB"),
        Err(_) => Decoded::Unreadable("the compressed answer does not inflate"),
    }
}

/// Outcomes of a success-class answer, refined by its JSON body when it has one; the reason
/// when the body looked like JSON but could not be read; whether its JSON broke off.
fn body_outcomes(body: &[u8], ids: MessageIds<'_>) -> (Vec<Outcome>, Option<&'static str>, bool) {
    let all = |outcome: Outcome| vec![outcome; ids.msg_ids.len()];
    // A body that starts with `{` but cannot be read (not JSON, a `status` that is a number)
    // acknowledges every message, as Dapr does: REST endpoints commonly answer
    // `{"status": 200}`, and retrying those would send every message they took to the DLQ. The
    // reason goes to the log, so an endpoint whose RETRY we cannot read is found there.
    let unreadable = |reason| (all(Outcome::Success), Some(reason), false);
    // Cheap pre-check: most endpoints answer with an empty body or plain text.
    let body = json_text(body);
    if !body.starts_with(b"{") {
        return (all(Outcome::Success), None, false);
    }
    let root = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(root)) => root,
        // JSON that breaks off was cut, not written wrong: an answer without a length ends
        // where its connection closes (HTTP/1.0, or `Connection: close` without one), so an
        // endpoint that dies mid-answer looks like one that finished. The part not read may
        // have said RETRY: nothing is acknowledged, as for JSON cut at the 1 MiB read.
        Err(e) if e.is_eof() => return (all(Outcome::Retry { delay_level: None }), None, true),
        _ => return unreadable("the answer starts with `{` but is not one JSON object"),
    };
    match field(&root, "statuses") {
        Some(Value::Array(entries)) => return (per_message(entries, ids), None, false),
        None | Some(Value::Null) => {}
        Some(_) => return unreadable("`statuses` is not an array"),
    }
    match field(&root, "status") {
        // Dapr treats a 2xx without a status (or with an empty one) as success.
        Some(Value::String(s)) if !s.trim().is_empty() => (
            all(status_outcome(s, field(&root, "delayLevel"))),
            None,
            false,
        ),
        None | Some(Value::Null | Value::String(_)) => (all(Outcome::Success), None, false),
        Some(_) => unreadable("`status` is not a string"),
    }
}

/// The UTF-8 byte order mark, which some servers' JSON writers put before the text (.NET's
/// `Encoding.UTF8` among them).
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// `body` from where its JSON text would start: after a leading UTF-8 byte order mark and
/// whitespace. serde_json refuses a BOM, and a `{"status":"RETRY"}` behind one must not pass
/// for a plain-text success.
pub(crate) fn json_text(body: &[u8]) -> &[u8] {
    body.strip_prefix(UTF8_BOM)
        .unwrap_or(body)
        .trim_ascii_start()
}

/// The outcome of each message from a `statuses` array, found by its msgId or else by the id of
/// the event forwarded for it: a message missing from it, or listed without a status, did not
/// say SUCCESS, so it retries.
fn per_message(entries: &[Value], ids: MessageIds<'_>) -> Vec<Outcome> {
    let mut by_id: HashMap<&str, Outcome> = HashMap::with_capacity(entries.len());
    for entry in entries {
        let Value::Object(entry) = entry else {
            continue;
        };
        let id = field(entry, "id")
            .or_else(|| field(entry, "entryId"))
            .and_then(Value::as_str);
        if let Some(id) = id {
            let outcome = field(entry, "status")
                .and_then(Value::as_str)
                .map_or(Outcome::Retry { delay_level: None }, |s| {
                    status_outcome(s, field(entry, "delayLevel"))
                });
            by_id.insert(id, outcome);
        }
    }
    let mut found: Vec<Option<Outcome>> = ids
        .msg_ids
        .iter()
        .map(|id| by_id.get(id).copied())
        .collect();
    for (i, event_id) in ids.event_ids {
        if let Some(slot @ None) = found.get_mut(*i) {
            *slot = by_id.get(event_id.as_str()).copied();
        }
    }
    found
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::Retry { delay_level: None }))
        .collect()
}

/// A key of an answer object, spelled exactly or else in any case: Dapr's Go decoder matches
/// field names case-insensitively, so `{"Status":"RETRY"}` from an untagged Go struct means
/// RETRY there and must not acknowledge here.
fn field<'a>(object: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// One `status` word (case-insensitive) with an optional `delayLevel`. Unknown words retry, as
/// Dapr does: an answer we do not understand must not acknowledge anything.
fn status_outcome(status: &str, delay_level: Option<&Value>) -> Outcome {
    match status.trim().to_ascii_uppercase().as_str() {
        "SUCCESS" => Outcome::Success,
        "DROP" => Outcome::Drop,
        _ => Outcome::Retry {
            delay_level: delay_level
                .and_then(Value::as_i64)
                .filter(|l| (1..=MAX_DELAY_LEVEL).contains(l))
                .and_then(|l| i32::try_from(l).ok()),
        },
    }
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date (a date in the past is zero).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long digit strings saturate rather than fail: they mean "a long time".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Parses an HTTP date (RFC 7231 section 7.1.1.1): the preferred IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`) and the two obsolete forms recipients must accept,
/// RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`).
/// The weekday name is checked for spelling, not against the date. Dates before 1970 are
/// returned as the epoch.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    if let Some((day_name, rest)) = s.split_once(", ") {
        if DAYS.contains(&day_name) {
            return parse_imf_fixdate(rest);
        }
        if LONG_DAYS.contains(&day_name) {
            return parse_rfc850(rest);
        }
        return None;
    }
    parse_asctime(s)
}

/// `06 Nov 1994 08:49:37 GMT`
fn parse_imf_fixdate(s: &str) -> Option<SystemTime> {
    let mut parts = s.split(' ');
    let day = parse_digits(parts.next()?, 2)?;
    let month = month_number(parts.next()?)?;
    let year = parse_digits(parts.next()?, 4)?;
    let (h, m, sec) = parse_clock(parts.next()?)?;
    if parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    to_system_time(i64::from(year), month, day, h, m, sec)
}

/// `06-Nov-94 08:49:37 GMT`
fn parse_rfc850(s: &str) -> Option<SystemTime> {
    let (date, rest) = s.split_once(' ')?;
    let (clock, zone) = rest.split_once(' ')?;
    if zone != "GMT" {
        return None;
    }
    let mut d = date.split('-');
    let day = parse_digits(d.next()?, 2)?;
    let month = month_number(d.next()?)?;
    let yy = parse_digits(d.next()?, 2)?;
    if d.next().is_some() {
        return None;
    }
    // Two-digit years: RFC 7231 says pick the most recent past century; for the dates this
    // code meets (Retry-After), 70..99 are the 1900s and 00..69 the 2000s.
    let year = if yy >= 70 { 1900 + yy } else { 2000 + yy };
    let (h, m, sec) = parse_clock(clock)?;
    to_system_time(i64::from(year), month, day, h, m, sec)
}

/// `Sun Nov  6 08:49:37 1994` (day padded with a space)
fn parse_asctime(s: &str) -> Option<SystemTime> {
    let day_name = s.get(..3)?;
    if !DAYS.contains(&day_name) || s.get(3..4)? != " " {
        return None;
    }
    let month = month_number(s.get(4..7)?)?;
    if s.get(7..8)? != " " {
        return None;
    }
    let day_text = s.get(8..10)?;
    let day = parse_digits(day_text.trim_start_matches(' '), 0)?;
    if s.get(10..11)? != " " {
        return None;
    }
    let (h, m, sec) = parse_clock(s.get(11..19)?)?;
    if s.get(19..20)? != " " {
        return None;
    }
    let year = parse_digits(s.get(20..)?, 4)?;
    to_system_time(i64::from(year), month, day, h, m, sec)
}

/// `08:49:37`
fn parse_clock(s: &str) -> Option<(u32, u32, u32)> {
    let mut parts = s.split(':');
    let h = parse_digits(parts.next()?, 2)?;
    let m = parse_digits(parts.next()?, 2)?;
    let sec = parse_digits(parts.next()?, 2)?;
    if parts.next().is_some() || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some((h, m, sec))
}

/// ASCII digits of exactly `len` characters (`0` = one or two).
fn parse_digits(s: &str, len: usize) -> Option<u32> {
    let ok_len = if len == 0 {
        (1..=2).contains(&s.len())
    } else {
        s.len() == len
    };
    if !ok_len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn month_number(s: &str) -> Option<u32> {
    let index = MONTHS.iter().position(|m| *m == s)?;
    u32::try_from(index + 1).ok()
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the usual era-based civil-to-days
/// computation: shift the year to start in March so the leap day is last).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn to_system_time(year: i64, month: u32, day: u32, h: u32, m: u32, s: u32) -> Option<SystemTime> {
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400
        + i64::from(h) * 3600
        + i64::from(m) * 60
        + i64::from(s);
    let secs = u64::try_from(secs).unwrap_or(0);
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    const RETRY: Outcome = Outcome::Retry { delay_level: None };
    const CAP: Duration = Duration::from_secs(60);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn classify(status: u16, headers: &HeaderMap, body: &str, ids: &[&str]) -> Answer {
        classify_response(
            &StatusClasses::default(),
            status,
            headers,
            body.as_bytes(),
            MessageIds::new(ids),
            CAP,
            at(1_000_000_000),
        )
    }

    fn outcomes(status: u16, body: &str, ids: &[&str]) -> Vec<Outcome> {
        classify(status, &HeaderMap::new(), body, ids).outcomes
    }

    #[test]
    fn default_classes() {
        let c = StatusClasses::default();
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(c.verdict(code), Verdict::Success, "{code}");
        }
        for code in [
            100, 301, 302, 304, 401, 403, 405, 408, 409, 425, 429, 451, 500, 502, 503, 504, 599,
        ] {
            assert_eq!(c.verdict(code), Verdict::Retry, "{code}");
        }
        for code in [400, 404, 410, 413, 415, 422] {
            assert_eq!(c.verdict(code), Verdict::Drop, "{code}");
        }
    }

    #[test]
    fn configured_classes_exact_beats_class() {
        let c = StatusClasses {
            success: vec![StatusPattern::Code(409)],
            retry: vec![StatusPattern::Code(429)],
            drop: vec![StatusPattern::Class(4), StatusPattern::Code(500)],
        };
        assert_eq!(c.verdict(409), Verdict::Success);
        assert_eq!(c.verdict(429), Verdict::Retry);
        assert_eq!(c.verdict(401), Verdict::Drop);
        assert_eq!(c.verdict(500), Verdict::Drop);
        assert_eq!(c.verdict(502), Verdict::Retry);
        assert_eq!(c.verdict(200), Verdict::Success);
        assert_eq!(c.verdict(302), Verdict::Retry);
    }

    #[test]
    fn status_patterns_parse() {
        assert_eq!("404".parse(), Ok(StatusPattern::Code(404)));
        assert_eq!(" 5xx ".parse(), Ok(StatusPattern::Class(5)));
        assert_eq!("4XX".parse(), Ok(StatusPattern::Class(4)));
        for bad in [
            "", "99", "600", "6xx", "0xx", "44xx", "x", "4x", "abc", "-1",
        ] {
            assert!(bad.parse::<StatusPattern>().is_err(), "{bad}");
        }
        assert_eq!(StatusPattern::Class(4).to_string(), "4xx");
        assert_eq!(StatusPattern::Code(404).to_string(), "404");
    }

    #[test]
    fn success_codes_and_plain_bodies() {
        let ids = ["A", "B"];
        for body in [
            "",
            "OK",
            "[1,2]",
            "{}",
            r#"{"status": ""}"#,
            r#"{"status": null, "statuses": null}"#,
            r#"{"ok": true}"#,
            "null",
        ] {
            assert_eq!(
                outcomes(200, body, &ids),
                vec![Outcome::Success; 2],
                "{body}"
            );
        }
        assert_eq!(outcomes(204, "", &ids), vec![Outcome::Success; 2]);
        let answer = classify(200, &HeaderMap::new(), "", &ids);
        assert!(answer.healthy);
        assert_eq!(answer.pause, None);
        // Codes past 599 (hyper passes up to 999) count against the circuit as 5xx do.
        for status in [500, 599, 600, 999] {
            assert!(
                !classify(status, &HeaderMap::new(), "", &ids).healthy,
                "{status}"
            );
        }
    }

    #[test]
    fn whole_request_status_in_body() {
        let ids = ["A", "B"];
        assert_eq!(outcomes(200, r#"{"status":"RETRY"}"#, &ids), vec![RETRY; 2]);
        assert_eq!(
            outcomes(200, r#" {"status":"drop"}"#, &ids),
            vec![Outcome::Drop; 2]
        );
        assert_eq!(
            outcomes(200, r#"{"status":"Success"}"#, &ids),
            vec![Outcome::Success; 2]
        );
        assert_eq!(outcomes(200, r#"{"status":"MAYBE"}"#, &ids), vec![RETRY; 2]);
        assert_eq!(
            outcomes(200, r#"{"status":"RETRY","delayLevel":5}"#, &ids),
            vec![
                Outcome::Retry {
                    delay_level: Some(5)
                };
                2
            ]
        );
        assert_eq!(
            outcomes(200, r#"{"status":"RETRY","delayLevel":99}"#, &ids),
            vec![RETRY; 2]
        );
    }

    #[test]
    fn per_message_statuses() {
        let ids = ["A", "B", "C", "D", "E"];
        let body = r#"{"statuses":[
            {"id":"A","status":"SUCCESS"},
            {"entryId":"B","status":"drop"},
            {"id":"C","status":"RETRY","delayLevel":4},
            {"id":"E"},
            {"id":"Z","status":"SUCCESS"},
            "junk"
        ]}"#;
        assert_eq!(
            outcomes(200, body, &ids),
            vec![
                Outcome::Success,
                Outcome::Drop,
                Outcome::Retry {
                    delay_level: Some(4)
                },
                RETRY, // missing
                RETRY, // no status
            ]
        );
        // statuses beat a whole-request status.
        let body = r#"{"status":"SUCCESS","statuses":[{"id":"A","status":"SUCCESS"}]}"#;
        assert_eq!(
            outcomes(200, body, &["A", "B"]),
            vec![Outcome::Success, RETRY]
        );
        // Duplicate message ids share the answer.
        let body = r#"{"statuses":[{"id":"A","status":"SUCCESS"}]}"#;
        assert_eq!(outcomes(200, body, &["A", "A"]), vec![Outcome::Success; 2]);
    }

    /// A CloudEvent forwarded as written reached the receiver with its own id, not the msgId:
    /// an answer naming that id settles the message.
    #[test]
    fn per_message_statuses_may_name_a_forwarded_event_by_its_id() {
        let msg_ids = ["A", "B", "C", "D", "E"];
        // D goes by two other ids (a msgId too long for the headers: the `ce-id` digest and the
        // offset msgId); the answer names the second.
        let event_ids = [
            (1, "evt-b".to_owned()),
            (2, "evt-c".to_owned()),
            (3, "digest-d".to_owned()),
            (3, "offset-d".to_owned()),
            (4, "evt-e".to_owned()),
        ];
        let ids = MessageIds {
            msg_ids: &msg_ids,
            event_ids: &event_ids,
        };
        let body = br#"{"statuses":[
            {"id":"A","status":"SUCCESS"},
            {"id":"evt-b","status":"DROP"},
            {"id":"C","status":"SUCCESS"},
            {"id":"evt-c","status":"RETRY"},
            {"id":"offset-d","status":"SUCCESS"}
        ]}"#;
        let answer = classify_response(
            &StatusClasses::default(),
            200,
            &HeaderMap::new(),
            body,
            ids,
            CAP,
            at(1_000_000_000),
        );
        assert_eq!(
            answer.outcomes,
            vec![
                Outcome::Success,
                Outcome::Drop,
                // The msgId comes first.
                Outcome::Success,
                Outcome::Success,
                // Named by neither.
                RETRY,
            ]
        );
        // Without the event ids, only the msgIds match.
        assert_eq!(
            outcomes(200, std::str::from_utf8(body).unwrap(), &msg_ids),
            vec![Outcome::Success, RETRY, Outcome::Success, RETRY, RETRY]
        );
    }

    #[test]
    fn error_codes_ignore_body() {
        let ids = ["A"];
        assert_eq!(outcomes(500, r#"{"status":"SUCCESS"}"#, &ids), vec![RETRY]);
        assert_eq!(outcomes(404, "", &ids), vec![Outcome::Drop]);
        assert_eq!(outcomes(422, "", &ids), vec![Outcome::Drop]);
        assert_eq!(outcomes(401, "", &ids), vec![RETRY]);
        assert_eq!(outcomes(302, "", &ids), vec![RETRY]);
        assert!(!classify(502, &HeaderMap::new(), "", &ids).healthy);
        assert!(classify(404, &HeaderMap::new(), "", &ids).healthy);
        assert!(classify(401, &HeaderMap::new(), "", &ids).healthy);
        assert!(!classify(429, &HeaderMap::new(), "", &ids).healthy);
        assert!(!classify(408, &HeaderMap::new(), "", &ids).healthy);
    }

    #[test]
    fn answer_keys_match_in_any_case() {
        let ids = ["A", "B"];
        assert_eq!(outcomes(200, r#"{"Status":"RETRY"}"#, &ids), vec![RETRY; 2]);
        let body =
            r#"{"Statuses":[{"EntryId":"A","Status":"SUCCESS"},{"ID":"B","STATUS":"drop"}]}"#;
        assert_eq!(
            outcomes(200, body, &ids),
            vec![Outcome::Success, Outcome::Drop]
        );
        // The exact spelling wins over another case of the same key.
        let body = r#"{"STATUS":"SUCCESS","status":"RETRY"}"#;
        assert_eq!(outcomes(200, body, &ids), vec![RETRY; 2]);
        assert_eq!(
            outcomes(200, r#"{"status":"RETRY","DelayLevel":5}"#, &ids),
            vec![
                Outcome::Retry {
                    delay_level: Some(5)
                };
                2
            ]
        );
    }

    /// Dapr acknowledges what it cannot read; so do we, naming the reason for the log.
    #[test]
    fn an_answer_that_looks_like_json_but_cannot_be_read_is_acknowledged() {
        let ids = ["A", "B"];
        for body in [
            "{not json",
            "{'status': 'SUCCESS'}",
            r#"{"statuses": {"A": "SUCCESS", "B": "SUCCESS"}}"#,
            r#"{"statuses": "SUCCESS"}"#,
            r#"{"status": 1}"#,
            r#"{"status": ["RETRY"]}"#,
            r#"{"status": 200, "message": "ok"}"#,
            "{\"a\": 1}\n{\"b\": 2}",
        ] {
            let answer = classify(200, &HeaderMap::new(), body, &ids);
            assert_eq!(answer.outcomes, vec![Outcome::Success; 2], "{body}");
            assert!(answer.unread.is_some(), "{body}");
            // The endpoint answered: its health is not in question.
            assert!(answer.healthy, "{body}");
        }
        assert_eq!(classify(200, &HeaderMap::new(), "{}", &ids).unread, None);
        assert!(!classify(200, &HeaderMap::new(), "{}", &ids).broke_off);
    }

    /// JSON that breaks off was cut (an answer without a length ends where its connection
    /// closes, so an endpoint dying mid-answer looks finished): what was not read may have said
    /// RETRY, so nothing is acknowledged, even what the part read said SUCCESS for.
    #[test]
    fn json_that_breaks_off_is_retried() {
        let ids = ["A", "B"];
        for body in [
            r#"{"statuses":[{"id":"A","status":"SUCCESS"},{"id":"B","status":"RE"#,
            r#"{"statuses":[{"id":"A","status":"SUCCESS"}"#,
            r#"{"status": "SUCCESS""#,
            "{",
        ] {
            let answer = classify(200, &HeaderMap::new(), body, &ids);
            assert_eq!(answer.outcomes, vec![RETRY; 2], "{body}");
            assert_eq!(answer.unread, None, "{body}");
            assert!(answer.broke_off, "{body}");
        }
    }

    /// A compressed answer's RETRY is read (servers may compress though asked for `identity`);
    /// one that cannot be read is acknowledged like unreadable JSON, with the reason.
    #[test]
    fn a_compressed_answer_is_read() {
        use std::io::Write as _;
        let ids = ["A", "B"];
        let json = br#"{"statuses":[{"id":"A","status":"SUCCESS"}]}"#;
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(json).unwrap();
        let gzip = gzip.finish().unwrap();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(json).unwrap();
        let zlib = zlib.finish().unwrap();
        let answer = |coding: &str, body: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_ENCODING, HeaderValue::from_str(coding).unwrap());
            classify_response(
                &StatusClasses::default(),
                200,
                &headers,
                body,
                MessageIds::new(&ids),
                CAP,
                at(1_000_000_000),
            )
        };
        for (coding, body) in [("gzip", &gzip), ("X-GZIP", &gzip), ("deflate", &zlib)] {
            let a = answer(coding, body);
            assert_eq!(a.outcomes, vec![Outcome::Success, RETRY], "{coding}");
            assert_eq!(a.unread, None, "{coding}");
        }
        assert_eq!(
            answer("identity", json).outcomes,
            vec![Outcome::Success, RETRY]
        );
        let mut twice = HeaderMap::new();
        twice.append(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        twice.append(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(matches!(
            decoded_body(&twice, &gzip),
            Decoded::Unreadable(_)
        ));
        assert_eq!(answer("gzip", b"").unread, None);
        // JSON labelled compressed but sent plain (a proxy's header) is read as it is.
        for coding in ["gzip", "deflate", "br"] {
            let a = answer(coding, json);
            assert_eq!(a.outcomes, vec![Outcome::Success, RETRY], "{coding}");
            assert_eq!(a.unread, None, "{coding}");
        }
        for (coding, body) in [
            ("br", &gzip[..]),
            ("gzip, br", &gzip[..]),
            ("gzip", b"\x1f\x8b\x08\x00garbage"),
            ("deflate", &gzip[..]),
        ] {
            let a = answer(coding, body);
            assert_eq!(a.outcomes, vec![Outcome::Success; 2], "{coding}");
            assert!(a.unread.is_some(), "{coding}");
        }
        // A bomb stops at the read limit.
        let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        bomb.write_all(&vec![b' '; super::super::MAX_ANSWER_BYTES + 1])
            .unwrap();
        let a = answer("gzip", &bomb.finish().unwrap());
        assert_eq!(a.outcomes, vec![Outcome::Success; 2]);
        assert_eq!(a.unread, Some("the compressed answer inflates past 1 MiB"));
        // JSON past the limit is not acknowledged, as when it comes plain.
        let mut cut = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        cut.write_all(br#"{"status":"SUCCESS","pad":""#).unwrap();
        cut.write_all(&vec![b'a'; super::super::MAX_ANSWER_BYTES])
            .unwrap();
        cut.write_all(br#""}"#).unwrap();
        let a = answer("gzip", &cut.finish().unwrap());
        assert_eq!(a.outcomes, vec![RETRY; 2]);
        // So is JSON whose stream breaks off.
        let a = answer("gzip", &gzip[..gzip.len() - 12]);
        assert_eq!(a.outcomes, vec![RETRY; 2]);
        assert_eq!(a.unread, None);
        // A stream of several gzip members is read whole.
        let (head, tail) = json.split_at(20);
        let mut members = Vec::new();
        for part in [head, tail] {
            let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            member.write_all(part).unwrap();
            members.extend(member.finish().unwrap());
        }
        let a = answer("gzip", &members);
        assert_eq!(a.outcomes, vec![Outcome::Success, RETRY]);
        assert_eq!(a.unread, None);
    }

    /// A byte order mark before the JSON (then whitespace) must not hide its RETRY.
    #[test]
    fn a_byte_order_mark_before_the_json_is_skipped() {
        let ids = ["A", "B"];
        assert_eq!(
            outcomes(200, "\u{feff}{\"status\":\"RETRY\"}", &ids),
            vec![RETRY; 2]
        );
        assert_eq!(
            outcomes(
                200,
                "\u{feff}\r\n {\"statuses\":[{\"id\":\"A\",\"status\":\"SUCCESS\"}]}",
                &ids
            ),
            vec![Outcome::Success, RETRY]
        );
        let answer = classify(200, &HeaderMap::new(), "\u{feff}{not json", &ids);
        assert_eq!(answer.outcomes, vec![Outcome::Success; 2]);
        assert!(answer.unread.is_some());
        // Text after a BOM is still text.
        assert_eq!(outcomes(200, "\u{feff}OK", &ids), vec![Outcome::Success; 2]);
        assert_eq!(json_text(b"\xEF\xBB\xBF \t{}"), b"{}");
        assert_eq!(json_text(b"\xEF\xBB{}"), b"\xEF\xBB{}");
    }

    fn retry_after(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn retry_after_on_429_and_503() {
        let ids = ["A", "B"];
        let later = |s| Outcome::Later {
            after: Duration::from_secs(s),
        };
        let a = classify(429, &retry_after("7"), "", &ids);
        assert_eq!(a.outcomes, vec![later(7); 2]);
        assert_eq!(a.pause, Some(Duration::from_secs(7)));
        // The pause, not the circuit, answers a 429 that says when to come back.
        assert!(a.healthy);
        let a = classify(503, &retry_after("7"), "", &ids);
        assert_eq!(a.outcomes, vec![later(7); 2]);
        assert!(!a.healthy);
        // Capped.
        assert_eq!(
            classify(429, &retry_after("3600"), "", &ids).outcomes,
            vec![later(60); 2]
        );
        assert_eq!(
            classify(429, &retry_after("99999999999999999999999"), "", &ids).outcomes,
            vec![later(60); 2]
        );
        // Floored: zero would spin.
        assert_eq!(
            classify(429, &retry_after("0"), "", &ids).outcomes,
            vec![later(1); 2]
        );
        // HTTP date 30 s after `now` (1_000_000_000 = Sun, 09 Sep 2001 01:46:40 GMT).
        assert_eq!(
            classify(503, &retry_after("Sun, 09 Sep 2001 01:47:10 GMT"), "", &ids).outcomes,
            vec![later(30); 2]
        );
        // Other codes ignore it; garbage falls back to the class.
        assert_eq!(
            classify(500, &retry_after("5"), "", &ids).outcomes,
            vec![RETRY; 2]
        );
        assert_eq!(
            classify(429, &retry_after("soon"), "", &ids).outcomes,
            vec![RETRY; 2]
        );
        assert_eq!(classify(429, &retry_after("soon"), "", &ids).pause, None);
    }

    #[test]
    fn a_zero_cap_ignores_retry_after() {
        let ids = ["A"];
        for status in [429, 503] {
            let a = classify_response(
                &StatusClasses::default(),
                status,
                &retry_after("7"),
                b"",
                MessageIds::new(&ids),
                Duration::ZERO,
                at(1_000_000_000),
            );
            // The class decides (both retry by default), and nothing pauses the endpoint.
            assert_eq!(a.outcomes, vec![RETRY], "status {status}");
            assert_eq!(a.pause, None, "status {status}");
        }
    }

    #[test]
    fn failures_retry_and_are_unhealthy() {
        for f in [Failure::Timeout, Failure::Unreachable, Failure::Transport] {
            let a = classify_failure(f, 3);
            assert_eq!(a.outcomes, vec![RETRY; 3]);
            assert!(!a.healthy);
        }
    }

    #[test]
    fn retry_after_values() {
        let now = at(1_000_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 5 ", now), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        // In the past: zero.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn http_dates() {
        // 784111777 = 1994-11-06T08:49:37Z, the RFC 7231 example, in all three forms.
        for s in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(s), Some(at(784_111_777)), "{s}");
        }
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(at(0))
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2000 23:59:59 GMT"),
            Some(at(951_868_799))
        );
        assert_eq!(
            parse_http_date("Sat, 01 Jan 2100 00:00:00 GMT"),
            Some(at(4_102_444_800))
        );
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1960 00:00:00 GMT"),
            Some(at(0))
        );
        assert_eq!(
            parse_http_date("Sat Nov 16 08:49:37 2024"),
            Some(at(1_731_746_977))
        );
        for bad in [
            "",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Mon, 29 Feb 1900 00:00:00 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            "Funday, 06-Nov-94 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sun Nov 06 08:49:37 94",
            "Sun Nov  6 08:49:37",
            "Sun, 0६ Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn imf_fixdate_round_trips(secs in 0u64..253_402_300_799) {
            // Format with humantime (RFC 3339) and rebuild the IMF-fixdate from its fields.
            let t = at(secs);
            let rfc = humantime::format_rfc3339_seconds(t).to_string();
            let (y, mo, d) = (&rfc[0..4], &rfc[5..7], &rfc[8..10]);
            let month = MONTHS[mo.parse::<usize>().unwrap() - 1];
            let weekday = DAYS[usize::try_from((secs / 86_400 + 3) % 7).unwrap()];
            let imf = format!("{weekday}, {d} {month} {y} {} GMT", &rfc[11..19]);
            proptest::prop_assert_eq!(parse_http_date(&imf), Some(t));
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_http_date(&s);
            let _ = parse_retry_after(&s, at(0));
            let _ = body_outcomes(s.as_bytes(), MessageIds::new(&["A"]));
        }
    }
}
