//! libFuzzer target for the SMPP framing layer. Copy into a cargo-fuzz
//! crate (fuzz/fuzz_targets/smpp_frame.rs) that depends on parla, bytes and
//! tokio-util (codec).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use parla::smpp::content::{decode_sms, read_delivery, sms_of};
use parla::smpp::frame::{Frame, MAX_PDU, SmppCodec, decode_one, encode_to_vec, to_json};
use tokio_util::codec::Decoder;

/// Everything done with a decoded frame must work for any frame.
fn use_frame(frame: &Frame) {
    let _ = to_json(frame);
    if let Frame::Pdu(command) = frame {
        // What we accept, we can send back and read again unchanged.
        let again = encode_to_vec(command).expect("re-encode");
        assert_eq!(&decode_one(&again).expect("re-decode"), frame);
        // What the link and the simulated SMSC read from an SMS PDU: text, parts, receipts.
        if let Some(sms) = sms_of(command) {
            let _ = decode_sms(&sms.content, false);
            let _ = decode_sms(&sms.content, true);
        }
        let _ = read_delivery(command, false);
    }
}

fuzz_target!(|data: &[u8]| {
    // The first octet chooses where the stream is cut into two reads.
    let (cut, bytes) = match data.split_first() {
        Some((&c, rest)) => (usize::from(c) * rest.len() / 256, rest),
        None => (0, data),
    };
    let mut codec = SmppCodec::new();
    let mut buf = BytesMut::new();
    for chunk in [&bytes[..cut], &bytes[cut..]] {
        buf.extend_from_slice(chunk);
        // Drain; after BadLength the codec keeps failing and drops input.
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            use_frame(&frame);
        }
        assert!(buf.len() < MAX_PDU, "decoder buffer unbounded");
    }
    let _ = codec.decode_eof(&mut buf);
    if let Ok(frame) = decode_one(bytes) {
        use_frame(&frame);
    }
});
