//! Contract conformance, the decision's side: what a contract declares
//! that a response can be checked against (each property's `logicalType`,
//! `required` and valid values), and how often and how strictly responses
//! are checked (`conformance: {sample, mode}` mesh-wide in the sidecar's
//! configuration, `meshgateConformance` per product in its contract).
//!
//! The checks themselves run in the response stage, on the masker's own
//! streaming parse (`pipeline/mask/conform.rs`).

use serde::{Deserialize, Deserializer};

/// ODCS v3.1's logical types (`SchemaBaseProperty.logicalType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogicalType {
    String,
    Integer,
    Number,
    Boolean,
    /// An ISO 8601 date in a string (`2019-04-01`).
    Date,
    /// An ISO 8601 date and time in a string, with or without an offset.
    Timestamp,
    /// An ISO 8601 time of day in a string (`13:45:00`).
    Time,
    Object,
    Array,
}

impl LogicalType {
    pub const ALL: [LogicalType; 9] = [
        LogicalType::String,
        LogicalType::Integer,
        LogicalType::Number,
        LogicalType::Boolean,
        LogicalType::Date,
        LogicalType::Timestamp,
        LogicalType::Time,
        LogicalType::Object,
        LogicalType::Array,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogicalType::String => "string",
            LogicalType::Integer => "integer",
            LogicalType::Number => "number",
            LogicalType::Boolean => "boolean",
            LogicalType::Date => "date",
            LogicalType::Timestamp => "timestamp",
            LogicalType::Time => "time",
            LogicalType::Object => "object",
            LogicalType::Array => "array",
        }
    }
}

impl std::str::FromStr for LogicalType {
    type Err = String;
    fn from_str(s: &str) -> Result<LogicalType, String> {
        LogicalType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "`{s}` is not an ODCS logicalType; one of string, integer, number, boolean, date, timestamp, time, object, array"
                )
            })
    }
}

/// What a response's value of one property is checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldCheck {
    /// `logicalType`, when declared.
    pub ty: Option<LogicalType>,
    /// `required: true`: ODCS's "may not contain null": the member must be
    /// present in every record, and not `null` (an empty unquoted CSV cell).
    pub required: bool,
    /// The valid values of a zero-tolerance `invalidValues` quality rule
    /// (`arguments.validValues`), when it has one.
    pub valid: Option<Box<[serde_json::Value]>>,
}

impl FieldCheck {
    /// Whether a value's first byte is not enough: its text is needed.
    pub fn needs_text(&self) -> bool {
        self.valid.is_some()
            || matches!(
                self.ty,
                Some(
                    LogicalType::Integer
                        | LogicalType::Date
                        | LogicalType::Timestamp
                        | LogicalType::Time
                )
            )
    }
}

/// What a violation does to the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Counted (`meshgate_contract_violations_total`), logged at most once
    /// a second per product and kind, audited; the response is unchanged.
    Observe,
    /// Counted, logged and audited, and the response refused: a 502
    /// `contract_violation` before its head, a cut transfer after.
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Observe => "observe",
            Mode::Enforce => "enforce",
        }
    }
}

/// The share of responses checked, 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample(f64);

impl Sample {
    pub const NEVER: Sample = Sample(0.0);
    pub const ALWAYS: Sample = Sample(1.0);

    pub fn new(ratio: f64) -> Result<Sample, String> {
        if ratio.is_finite() && (0.0..=1.0).contains(&ratio) {
            Ok(Sample(ratio))
        } else {
            Err(format!("sample {ratio} is not a ratio between 0 and 1"))
        }
    }

    pub fn ratio(self) -> f64 {
        self.0
    }

    /// Whether a response is checked, given a uniform random `draw`
    /// (`0..u64::MAX`): never drawn at 0 or 1 (`draw` is called only
    /// between them).
    pub fn take(self, draw: impl FnOnce() -> u64) -> bool {
        if self.0 <= 0.0 {
            false
        } else if self.0 >= 1.0 {
            true
        } else {
            // 53 bits of the draw, as a float in [0, 1).
            ((draw() >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < self.0
        }
    }
}

impl<'de> Deserialize<'de> for Sample {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Sample, D::Error> {
        Sample::new(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// `conformance` as written, mesh-wide or for one product: what is not
/// set comes from the next level (product, then mesh, then the defaults).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConformanceSettings {
    /// The share of responses checked, 0 to 1.
    #[serde(default)]
    pub sample: Option<Sample>,
    #[serde(default)]
    pub mode: Option<Mode>,
}

/// The conformance a product's responses get.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conformance {
    pub sample: Sample,
    pub mode: Mode,
}

impl Conformance {
    /// Without a setting anywhere: one response in a hundred checked, in
    /// `observe` (drift shows in the metrics at a negligible cost, and no
    /// answer changes until a product or the mesh asks to `enforce`).
    pub const DEFAULT: Conformance = Conformance {
        sample: Sample(0.01),
        mode: Mode::Observe,
    };
}

impl ConformanceSettings {
    /// These settings (a product's) over `mesh`'s, over the defaults.
    pub fn over(self, mesh: ConformanceSettings) -> Conformance {
        Conformance {
            sample: self
                .sample
                .or(mesh.sample)
                .unwrap_or(Conformance::DEFAULT.sample),
            mode: self.mode.or(mesh.mode).unwrap_or(Conformance::DEFAULT.mode),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_products_setting_wins_field_by_field_over_the_meshs_and_the_defaults() {
        let mesh = ConformanceSettings {
            sample: Some(Sample::ALWAYS),
            mode: Some(Mode::Observe),
        };
        let product = ConformanceSettings {
            sample: None,
            mode: Some(Mode::Enforce),
        };
        assert_eq!(
            product.over(mesh),
            Conformance {
                sample: Sample::ALWAYS,
                mode: Mode::Enforce
            }
        );
        assert_eq!(
            ConformanceSettings::default().over(ConformanceSettings::default()),
            Conformance::DEFAULT
        );
    }

    #[test]
    fn a_sample_is_a_ratio_and_draws_only_between_never_and_always() {
        assert!(Sample::new(1.5).is_err() && Sample::new(-0.1).is_err());
        assert!(Sample::new(f64::NAN).is_err());
        assert!(!Sample::NEVER.take(|| unreachable!("no draw at 0")));
        assert!(Sample::ALWAYS.take(|| unreachable!("no draw at 1")));
        let half = Sample::new(0.5).expect("ratio");
        assert!(half.take(|| 0) && !half.take(|| u64::MAX));
        let yaml: Result<ConformanceSettings, _> = serde_yaml_ng::from_str("sample: 2");
        let e = yaml.expect_err("out of range").to_string();
        assert!(e.contains("between 0 and 1"), "{e}");
        let yaml: Result<ConformanceSettings, _> = serde_yaml_ng::from_str("mode: loud");
        assert!(yaml.is_err());
    }
}
