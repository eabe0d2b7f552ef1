//! PEM errors as an operator reads them: rustls-pki-types prints the line or
//! marker at fault as a byte array (`[67, 69, 82, 84, …]`); here as text.

use rustls_pki_types::pem::Error;

/// The error, its line or marker as text (lossy, control characters
/// escaped, at most 80 characters).
pub fn describe(e: &Error) -> String {
    match e {
        Error::MissingSectionEnd { end_marker } => {
            // The section's label (`CERTIFICATE`), or, as some versions
            // hold it, the whole line.
            let label = text(end_marker);
            let line = if label.starts_with("-----") {
                label
            } else {
                format!("-----END {label}-----")
            };
            format!("no `{line}` line: the PEM section is cut short")
        }
        Error::IllegalSectionStart { line } => {
            format!("a malformed PEM section start line: `{}`", text(line))
        }
        other => other.to_string(),
    }
}

fn text(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    /// Before: `missing section end marker: [45, 45, 45, 45, 45, 69, 78, …]`.
    #[test]
    fn a_cut_section_names_its_end_line_as_text() {
        let cut = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
        let e = CertificateDer::pem_slice_iter(cut)
            .find_map(Result::err)
            .expect("an error");
        assert_eq!(
            describe(&e),
            "no `-----END CERTIFICATE-----` line: the PEM section is cut short"
        );
        let e = CertificateDer::pem_slice_iter(b"-----BEGIN CERT\x01IFICATE\n")
            .find_map(Result::err)
            .expect("an error");
        assert!(!describe(&e).contains("[45"), "{}", describe(&e));
    }
}
