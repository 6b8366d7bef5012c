// SMS content for the node-smpp scripts (smsc.js, esme.js), read and written from the octets on
// the wire rather than with node-smpp's own text codec: GSM 03.38, UCS-2, concatenation.
'use strict';

// node-smpp decodes short_message, message_payload and times with its own codec: switch that
// off, so the scripts read the octets that came on the wire (and spend no time on it).
function rawCodec(smpp) {
	for (const name of Object.keys(smpp.commands)) {
		const params = smpp.commands[name].params || {};
		for (const key of Object.keys(params)) delete params[key].filter;
	}
	delete smpp.tlvs.message_payload.filter;
}

// ------------------------------------------------------------------------------ GSM 03.38

const GSM_BASIC =
	'@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !"#¤%&\'()*+,-./0123456789:;<=>?' +
	'¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà';
const GSM_EXTENSION = { 0x0a: '\f', 0x14: '^', 0x28: '{', 0x29: '}', 0x2f: '\\', 0x3c: '[', 0x3d: '~', 0x3e: ']', 0x40: '|', 0x65: '€' };
const GSM_ENCODE = new Map();
[...GSM_BASIC].forEach((c, i) => { if (i !== 0x1b) GSM_ENCODE.set(c, [i]); });
for (const [code, c] of Object.entries(GSM_EXTENSION)) GSM_ENCODE.set(c, [0x1b, Number(code)]);

const GSM_BASIC_CHARS = [...GSM_BASIC];
function gsmDecode(octets) {
	let out = '';
	for (let i = 0; i < octets.length; i++) {
		const b = octets[i] & 0x7f;
		if (b === 0x1b && i + 1 < octets.length) {
			const next = octets[++i] & 0x7f;
			out += GSM_EXTENSION[next] !== undefined ? GSM_EXTENSION[next] : ' ';
		} else {
			out += GSM_BASIC_CHARS[b];
		}
	}
	return out;
}

// Septets of `text` (one octet each, unpacked), or null when a character is not in GSM 03.38.
function gsmEncode(text) {
	const out = [];
	for (const c of text) {
		const code = GSM_ENCODE.get(c);
		if (!code) return null;
		out.push(...code);
	}
	return out;
}

function ucs2Decode(octets) {
	const even = octets.length - (octets.length % 2);
	const swapped = Buffer.from(octets.subarray(0, even));
	swapped.swap16();
	return swapped.toString('utf16le');
}

function ucs2Encode(text) {
	const buffer = Buffer.from(text, 'utf16le');
	buffer.swap16();
	return buffer;
}

function decodeText(octets, dataCoding) {
	switch (dataCoding) {
		case 0: return gsmDecode(octets);
		case 1: return octets.toString('ascii');
		case 3: return octets.toString('latin1');
		case 8: return ucs2Decode(octets);
		default:
			// General data coding group 00xx: bits 2-3 say the alphabet.
			if ((dataCoding & 0xc0) === 0 || (dataCoding & 0xf0) === 0xf0) {
				const alphabet = (dataCoding & 0xf0) === 0xf0 ? (dataCoding & 0x04) : (dataCoding & 0x0c);
				if (alphabet === 0) return gsmDecode(octets);
				if (alphabet === 0x08) return ucs2Decode(octets);
			}
			return `hex:${octets.toString('hex')}`;
	}
}

// The concatenation of a user data header: {ref, total, seq} or null.
function concatOf(udh) {
	let i = 1;
	while (i + 1 < udh.length) {
		const iei = udh[i];
		const len = udh[i + 1];
		const data = udh.subarray(i + 2, i + 2 + len);
		if (iei === 0x00 && len === 3) return { ref: data[0], total: data[1], seq: data[2] };
		if (iei === 0x08 && len === 4) return { ref: data.readUInt16BE(0), total: data[2], seq: data[3] };
		i += 2 + len;
	}
	return null;
}

// ------------------------------------------------------------------------------ addresses

function addressFields(number) {
	if (/^\+\d+$/.test(number)) return { ton: 1, npi: 1, addr: number.slice(1) };
	if (/^\d{1,8}$/.test(number)) return { ton: 3, npi: 0, addr: number };
	if (/^\d+$/.test(number)) return { ton: 1, npi: 1, addr: number };
	return { ton: 5, npi: 0, addr: number };
}

function shown(ton, addr) {
	return ton === 1 && addr && !addr.startsWith('+') ? `+${addr}` : addr;
}

// The text and concatenation of one submit_sm or deliver_sm (short_message or message_payload,
// UDH or SAR), read from the octets on the wire.
function readSms(pdu) {
	let octets = pdu.short_message && pdu.short_message.length ? pdu.short_message : (pdu.message_payload || Buffer.alloc(0));
	let concat = null;
	if ((pdu.esm_class & 0x40) && octets.length > 0) {
		const udhLength = octets[0] + 1;
		concat = concatOf(octets.subarray(0, udhLength));
		octets = octets.subarray(udhLength);
	} else if (pdu.sar_msg_ref_num !== undefined) {
		concat = { ref: pdu.sar_msg_ref_num, total: pdu.sar_total_segments, seq: pdu.sar_segment_seqnum };
	}
	return { text: decodeText(octets, pdu.data_coding), concat };
}

// The parts of `text` as an SMS sender cuts them: GSM 03.38 (data_coding 0, one septet an
// octet) when every character has a septet, else UCS-2 (8); 153 septets or 134 octets a part
// when it needs more than one. Returns {dataCoding, parts: [Buffer]} (no UDH).
function splitText(text) {
	const septets = gsmEncode(text);
	let dataCoding;
	let units; // one entry per character: its octets (escape pairs and surrogate pairs stay whole)
	if (septets) {
		dataCoding = 0;
		units = [...text].map((c) => GSM_ENCODE.get(c));
	} else {
		dataCoding = 8;
		units = [...text].map((c) => [...ucs2Encode(c)]);
	}
	const total = units.reduce((n, u) => n + u.length, 0);
	const parts = [];
	if (total <= 140 + (dataCoding === 0 ? 20 : 0)) {
		parts.push(Buffer.from(units.flat()));
	} else {
		const limit = dataCoding === 0 ? 153 : 134;
		let current = [];
		for (const u of units) {
			if (current.length + u.length > limit) {
				parts.push(Buffer.from(current));
				current = [];
			}
			current.push(...u);
		}
		if (current.length) parts.push(Buffer.from(current));
	}
	return { dataCoding, parts };
}

function smppDate(date) {
	const p = (n) => String(n).padStart(2, '0');
	return p(date.getUTCFullYear() % 100) + p(date.getUTCMonth() + 1) + p(date.getUTCDate()) +
		p(date.getUTCHours()) + p(date.getUTCMinutes());
}

// Calls onLine for each line on stdin (without its line end), then onEnd at its end.
function readLines(onLine, onEnd) {
	let pending = '';
	process.stdin.setEncoding('utf8');
	process.stdin.on('data', (chunk) => {
		pending += chunk;
		let newline;
		while ((newline = pending.indexOf('\n')) >= 0) {
			const line = pending.slice(0, newline).replace(/\r$/, '');
			pending = pending.slice(newline + 1);
			onLine(line);
		}
	});
	process.stdin.on('end', onEnd);
}

module.exports = {
	readLines,
	rawCodec, gsmDecode, gsmEncode, ucs2Decode, ucs2Encode, decodeText, concatOf, addressFields, shown,
	readSms, splitText, smppDate, GSM_ENCODE,
};
