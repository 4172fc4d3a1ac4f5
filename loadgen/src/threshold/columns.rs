//! The columns of a result-file row type (`summary.csv`, `capacity.csv`) and what each holds, read
//! from the type's own `Deserialize` impl, so thresholds know every column without a list to keep.

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Number,
    Bool,
    Text,
}

/// One column of a row type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub kind: ColumnKind,
    /// Empty in rows where it does not apply (an `Option` field).
    pub optional: bool,
}

/// The columns of `T`, in the order of its fields (the CSV's column order).
pub fn columns_of<T: for<'de> serde::Deserialize<'de>>() -> Vec<Column> {
    let names = field_names::<T>();
    (0..names.len())
        .map(|index| {
            let mut probe = Probe {
                only: index,
                names: &[],
                found: None,
                optional: false,
            };
            // Deserialising one field and then stopping fails by design: the probe has learnt
            // what it wanted when the field's value asked for its type.
            let _ = T::deserialize(&mut probe);
            Column {
                name: names[index],
                kind: probe.found.unwrap_or(ColumnKind::Text),
                optional: probe.optional,
            }
        })
        .collect()
}

fn field_names<T: for<'de> serde::Deserialize<'de>>() -> &'static [&'static str] {
    let mut probe = Probe {
        only: usize::MAX,
        names: &[],
        found: None,
        optional: false,
    };
    let _ = T::deserialize(&mut probe);
    probe.names
}

/// A deserializer that hands a struct exactly one field (`only`) and records what type that
/// field's value asks for; every other request ends the attempt.
struct Probe {
    only: usize,
    names: &'static [&'static str],
    found: Option<ColumnKind>,
    optional: bool,
}

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("probe stopped")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for &mut Probe {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        self.names = fields;
        if self.only >= fields.len() {
            return Err(Stop);
        }
        visitor.visit_map(OneField {
            probe: self,
            given: false,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The map of one field: its name, then its value read by [`ValueProbe`].
struct OneField<'a> {
    probe: &'a mut Probe,
    given: bool,
}

impl<'de> MapAccess<'de> for OneField<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        if self.given {
            return Err(Stop);
        }
        self.given = true;
        let name: &'static str = self.probe.names[self.probe.only];
        seed.deserialize(name.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        seed.deserialize(ValueProbe { probe: self.probe })
    }
}

/// Records the type a field's value asks for, looking through `Option`.
struct ValueProbe<'a> {
    probe: &'a mut Probe,
}

impl ValueProbe<'_> {
    fn found<T>(self, kind: ColumnKind) -> Result<T, Stop> {
        self.probe.found = Some(kind);
        Err(Stop)
    }
}

impl<'de> Deserializer<'de> for ValueProbe<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.found(ColumnKind::Text)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.probe.optional = true;
        visitor.visit_some(self)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.found(ColumnKind::Bool)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.found(ColumnKind::Number)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.found(ColumnKind::Number)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.found(ColumnKind::Number)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.found(ColumnKind::Number)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.found(ColumnKind::Number)
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u128 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::SummaryRow;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Row {
        name: String,
        count: u64,
        share: Option<f64>,
        ok: bool,
        #[serde(default)]
        later: Option<u64>,
    }

    #[test]
    fn reads_names_kinds_and_optionality() {
        let columns = columns_of::<Row>();
        let shape: Vec<(&str, ColumnKind, bool)> = columns
            .iter()
            .map(|c| (c.name, c.kind, c.optional))
            .collect();
        assert_eq!(
            shape,
            [
                ("name", ColumnKind::Text, false),
                ("count", ColumnKind::Number, false),
                ("share", ColumnKind::Number, true),
                ("ok", ColumnKind::Bool, false),
                ("later", ColumnKind::Number, true),
            ]
        );
    }

    #[test]
    fn summary_columns_match_the_csv_header() {
        let columns = columns_of::<SummaryRow>();
        let path = crate::output::test_util::temp_path("columns-summary.csv");
        let cell = crate::output::test_util::sample_cell(crate::pattern::Pattern::Sse, true);
        crate::output::write_summary(&path, "r", &[cell]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
        let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
        assert_eq!(names, header);
        let kind = |name: &str| columns.iter().find(|c| c.name == name).unwrap().kind;
        assert_eq!(kind("pattern"), ColumnKind::Text);
        assert_eq!(kind("p99_ms"), ColumnKind::Number);
        assert_eq!(kind("complete"), ColumnKind::Bool);
        assert_eq!(kind("warnings"), ColumnKind::Text);
        assert_eq!(kind("target"), ColumnKind::Text);
        // The load generator's placement and the write-time figures are thresholds too.
        assert_eq!(kind("notes"), ColumnKind::Text);
        assert_eq!(kind("server_cpus"), ColumnKind::Text);
        assert_eq!(kind("loadgen_procs"), ColumnKind::Number);
        assert_eq!(kind("loadgen_wait_s"), ColumnKind::Number);
        let optional = |name: &str| columns.iter().find(|c| c.name == name).unwrap().optional;
        assert_eq!(kind("write_p99_ms"), ColumnKind::Number);
        assert!(optional("write_p99_ms") && optional("publish_lateness_p99_ms"));
        assert!(optional("clock_error_ms") && !optional("loadgen_procs"));
    }
}
