//! The kinds of contract violation a response can show (response
//! governance's conformance checks): a fixed set, so that metrics labels
//! and audit events stay bounded. Decided in `pipeline/mask/conform.rs`,
//! counted in `observe/metrics`, written in `observe/audit`.

/// One kind of violation of a response against its dataset's contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A `required` property absent, or `null`.
    Required,
    /// A value that is not of its property's `logicalType`.
    Type,
    /// A value outside its property's declared valid values.
    Enum,
    /// A member (or CSV column) the contract does not declare.
    Undeclared,
    /// A body that is not the JSON, NDJSON or CSV its content type says.
    Malformed,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Required,
        Kind::Type,
        Kind::Enum,
        Kind::Undeclared,
        Kind::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Required => "required",
            Kind::Type => "type",
            Kind::Enum => "enum",
            Kind::Undeclared => "undeclared",
            Kind::Malformed => "malformed",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of kinds (what one response showed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    pub const NONE: Kinds = Kinds(0);

    pub fn insert(&mut self, kind: Kind) {
        self.0 |= kind.bit();
    }

    pub fn contains(self, kind: Kind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds in the set, in [`Kind::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| self.contains(*k))
    }

    pub fn union(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_of_kinds_lists_each_once_in_a_fixed_order() {
        let mut k = Kinds::NONE;
        assert!(k.is_empty());
        k.insert(Kind::Undeclared);
        k.insert(Kind::Required);
        k.insert(Kind::Undeclared);
        let names: Vec<&str> = k.iter().map(Kind::as_str).collect();
        assert_eq!(names, ["required", "undeclared"]);
        assert!(!k.contains(Kind::Type));
    }
}
