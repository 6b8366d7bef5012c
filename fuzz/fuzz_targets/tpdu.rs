//! Fuzzes `parla::codec::tpdu`, the SMS PDU codec.
//!
//! The input is decoded as a modem's PDU (with and without the SCA prefix, strict and tolerant of
//! an overrunning TP-UDL) and as hex text. Decoding must be total; whatever decodes must serialize
//! to JSON and re-encode without panicking, and a PDU that re-encodes must decode back to the same
//! value (the structural encoders write exactly what the decoder read).
#![no_main]

use libfuzzer_sys::fuzz_target;
use parla::codec::tpdu::{self, DecodeOptions, Pdu};

fuzz_target!(|data: &[u8]| {
    for with_smsc in [true, false] {
        for allow_udl_overrun in [false, true] {
            check(
                data,
                DecodeOptions {
                    with_smsc,
                    allow_udl_overrun,
                },
            );
        }
    }
    // The same bytes as the text a modem prints.
    if let Ok(bytes) = tpdu::decode_hex(&String::from_utf8_lossy(data)) {
        let _ = tpdu::decode(&bytes, true);
    }
});

fn check(data: &[u8], options: DecodeOptions) {
    let strict = tpdu::decode(data, options.with_smsc);
    let Ok(pdu) = tpdu::decode_with(data, options) else {
        assert!(strict.is_err(), "strict decode accepts what tolerant decode refuses");
        return;
    };
    if let Ok(strict) = &strict {
        // Tolerance only ever adds: anything strict accepts decodes identically.
        assert_eq!(strict, &pdu);
    }
    serde_json::to_string(&pdu).expect("decoded PDUs serialize");
    if let Pdu::StatusReport(report) = &pdu {
        let _ = report.outcome();
    }
    // Re-encoding a decoded SUBMIT (and the other types) must not panic; when it succeeds the
    // bytes must decode to the same value.
    let Ok(encoded) = pdu.encode() else {
        return;
    };
    assert_eq!(encoded.bytes.len() - encoded.tpdu_len, {
        let sca = usize::from(encoded.bytes[0]);
        1 + sca
    });
    let input = if options.with_smsc {
        &encoded.bytes[..]
    } else {
        &encoded.bytes[1..]
    };
    assert_eq!(tpdu::decode_with(input, options).as_ref(), Ok(&pdu));
}
