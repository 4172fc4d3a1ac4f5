//! Finding the publish stamp `cb:{publish id}:{intended ns}:` (`crate::clock`; commbench's own
//! publisher follows it with `w{written ns}:`) anywhere in what a server sends — a poll body
//! holding several events, an SSE `data`, a WebSocket frame, a Socket.IO argument, JSON-escaped
//! inside a string or not — and numbering publishes per topic, so delivery is accounted by publish
//! id for servers that know nothing of commbench's sequence numbers. The publisher and the clients share the numbering below.

use crate::clock::decode_stamp;
pub use crate::clock::Stamp;

/// The stamp's first bytes.
const MAGIC: &[u8] = b"cb:";

/// Every stamp in `bytes`, in order. A stamp holds only ASCII letters, digits and `:`, which no
/// JSON, SSE or Socket.IO encoding escapes, so it reads the same at any depth of quoting.
pub fn stamps(bytes: &[u8]) -> impl Iterator<Item = Stamp> + '_ {
    let mut from = 0;
    std::iter::from_fn(move || {
        while let Some(at) = find(&bytes[from..]) {
            let start = from + at;
            from = start + MAGIC.len();
            if let Some(stamp) = decode_stamp(&bytes[start..]) {
                return Some(stamp);
            }
        }
        from = bytes.len();
        None
    })
}

fn find(haystack: &[u8]) -> Option<usize> {
    haystack.windows(MAGIC.len()).position(|w| w == MAGIC)
}

/// The topic (index into the cell's topics) publish `publish_id` goes to: round-robin.
pub fn topic_of(publish_id: u64, topics: usize) -> usize {
    (publish_id % topics.max(1) as u64) as usize
}

/// Publish `publish_id`'s number among its topic's publishes, from 1: dense per topic, so a
/// client's books by stamp work like books by sequence number.
pub fn ordinal_of(publish_id: u64, topics: usize) -> u64 {
    publish_id / topics.max(1) as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::encode_payload;

    fn found(bytes: &[u8]) -> Vec<(u64, u64)> {
        stamps(bytes)
            .map(|s| (s.publish_id, s.intended_ns))
            .collect()
    }

    #[test]
    fn finds_every_stamp_in_a_poll_page() {
        let a = String::from_utf8(encode_payload(4, 1_000, 1_200, 64).to_vec()).unwrap();
        let b = String::from_utf8(encode_payload(14, 2_000, 2_300, 64).to_vec()).unwrap();
        let page =
            format!(r#"{{"head":9,"events":[{{"seq":1,"data":"{a}"}},{{"seq":2,"data":"{b}"}}]}}"#);
        assert_eq!(found(page.as_bytes()), [(4, 1_000), (14, 2_000)]);
        // The write time commbench's publisher adds is read too (delivery from the write).
        let written: Vec<Option<u64>> = stamps(page.as_bytes()).map(|s| s.written_ns).collect();
        assert_eq!(written, [Some(1_200), Some(2_300)]);
    }

    #[test]
    fn finds_stamps_inside_escaped_json_and_ignores_look_alikes() {
        // A Socket.IO argument holding a JSON string that holds the event JSON.
        let inner = r#"{"topic":"t","data":"cb:7:99:xxxx"}"#;
        let outer = serde_json::to_string(&serde_json::json!(["event", inner])).unwrap();
        assert!(outer.contains("\\\"data\\\""), "{outer}");
        assert_eq!(found(format!("42{outer}").as_bytes()), [(7, 99)]);
        assert_eq!(found(b"cb:x cb:1: cb:1:2 cbcb:3:4:"), [(3, 4)]);
        assert_eq!(found(b""), []);
        // Binary frames are bytes like any other.
        assert_eq!(found(b"\x00\xffcb:5:6:\x00"), [(5, 6)]);
    }

    #[test]
    fn publishes_are_dense_per_topic() {
        let topics = 3;
        let on_topic_1: Vec<u64> = (0..12)
            .filter(|id| topic_of(*id, topics) == 1)
            .map(|id| ordinal_of(id, topics))
            .collect();
        assert_eq!(on_topic_1, [1, 2, 3, 4]);
        assert_eq!((topic_of(5, 1), ordinal_of(5, 1)), (0, 6));
    }
}
