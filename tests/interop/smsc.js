#!/usr/bin/env node
// A small SMSC on node-smpp (farhadi/node-smpp): an SMPP implementation not written in parla,
// for parla's interoperability test (tests/interop.rs) and as the SMSC sink of an end-to-end
// benchmark.
//
//   node smsc.js [PORT | --port PORT] [--system-id ID] [--password PW] [--quiet] [--receipt-delay-ms N]
//
// PORT: where to listen on 127.0.0.1 (0 or absent: any free port). --system-id/--password (or
// SMSC_SYSTEM_ID/SMSC_PASSWORD): the only account accepted; unset: any. It prints one JSON line
// per event on stdout, first {"event":"ready","port":N}.
//
// - Binds: bind_transceiver, bind_transmitter, bind_receiver.
// - submit_sm: answered with a message id in lowercase hex (a counter); with registered_delivery
//   a delivery receipt follows after --receipt-delay-ms (default 10): a deliver_sm with
//   esm_class 0x04 whose text names the id in DECIMAL ("id:<decimal> sub:001 dlvrd:001 ..."),
//   plus the TLVs receipted_message_id (the id in hex) and message_state. The text and TLVs
//   disagreeing in base is what real SMSCs do, and what an ESME has to cope with.
// - It decodes submits itself (not with node-smpp's codec): UDH (IE 0x00/0x08) or SAR
//   concatenation, data_coding 0 as GSM 03.38 unpacked, 1 ASCII, 3 Latin-1, 8 UCS-2 BE; it
//   prints {"event":"submit",...} per submit_sm and {"event":"message",to,from,text} per whole
//   message (after its last part).
// - enquire_link and unbind are answered.
//
// Commands on stdin, one a line:
//   mo <from> <to> <text>   a customer's SMS as deliver_sm (esm_class 0) to the newest bound
//                           session that receives; prints {"event":"mo_acked","status":N} when
//                           its deliver_sm_resp comes (one per part for a long text)
//   set receipt_tlv 0|1     later receipts with (1, the default) or without (0) the TLVs
//                           receipted_message_id and message_state; without, only the
//                           decimal id: in the text names the message
//   set receipt_stat STAT   stat: of later receipts (DELIVRD, UNDELIV, REJECTD, EXPIRED, ...)
//   set receipt_delay_ms N  delay between submit_sm_resp and receipt
//   set submit_status N     answer later submit_sm with this command_status (e.g. 88 = 0x58
//                           ESME_RTHROTTLED; 0 again to accept), no message id, no receipt
//   quit                    closes every session and exits 0 (so does the end of stdin)
//
// --quiet: no per-PDU lines; instead {"event":"stats","submits":N,"receipts":N,...} every
// second. Nothing is written synchronously per PDU then, and no text is decoded.
'use strict';

const smpp = require('smpp');
const sms = require('./sms');

// ------------------------------------------------------------------------------ options

const options = {
	port: 0,
	systemId: process.env.SMSC_SYSTEM_ID || '',
	password: process.env.SMSC_PASSWORD || '',
	quiet: false,
	receiptDelayMs: 10,
	receiptTlv: true,
	receiptStat: 'DELIVRD',
	submitStatus: 0,
};

function usage(message) {
	process.stderr.write(`smsc.js: ${message}\n` +
		'usage: node smsc.js [PORT | --port PORT] [--system-id ID] [--password PW] [--quiet] [--receipt-delay-ms N]\n');
	process.exit(2);
}

{
	const argv = process.argv.slice(2);
	for (let i = 0; i < argv.length; i++) {
		const arg = argv[i];
		const value = () => {
			if (i + 1 >= argv.length) usage(`${arg} needs a value`);
			return argv[++i];
		};
		switch (arg) {
			case '--port': options.port = Number(value()); break;
			case '--system-id': options.systemId = value(); break;
			case '--password': options.password = value(); break;
			case '--quiet': options.quiet = true; break;
			case '--receipt-delay-ms': options.receiptDelayMs = Number(value()); break;
			default:
				if (/^\d+$/.test(arg)) options.port = Number(arg);
				else usage(`unknown argument ${arg}`);
		}
	}
	if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) usage('bad port');
	if (!(options.receiptDelayMs >= 0)) usage('bad --receipt-delay-ms');
}

sms.rawCodec(smpp);

const E = smpp.errors;
const MESSAGE_STATE = {
	ENROUTE: 1, DELIVRD: 2, EXPIRED: 3, DELETED: 4, UNDELIV: 5, ACCEPTD: 6, UNKNOWN: 7, REJECTD: 8,
};

// ------------------------------------------------------------------------------ output

const counters = { submits: 0, receipts: 0, receipts_refused: 0, mo: 0, sessions: 0 };

function emit(event) {
	process.stdout.write(JSON.stringify(event) + '\n');
}

// Per-PDU lines: none in quiet mode.
function trace(event) {
	if (!options.quiet) emit(event);
}

// ------------------------------------------------------------------------------ sessions

const sessions = new Set();
let nextId = 0xa0000; // message ids: lowercase hex of a counter ("a0000" is 655360 in decimal)
const partials = new Map(); // concatenated messages waiting for parts

function bound(session, receives) {
	return session.bound && !session.socket.destroyed && (!receives || session.bindCommand !== 'bind_transmitter');
}

// The session a receipt or an MO goes to: the given one if it receives, else the newest that
// does (with the same account, when one is given).
function receiverFor(session) {
	if (session && bound(session, true)) return session;
	let found = null;
	for (const s of sessions) {
		if (bound(s, true) && (!session || s.systemId === session.systemId)) found = s;
	}
	return found;
}

const server = smpp.createServer({ debug: false }, (session) => {
	sessions.add(session);
	session.bound = false;
	session.bindCommand = null;
	session.systemId = null;
	session.on('pdu', (pdu) => onPdu(session, pdu));
	session.on('error', (e) => {
		trace({ event: 'session_error', message: e.message });
		session.destroy();
	});
	session.on('close', () => {
		sessions.delete(session);
		if (session.bound) counters.sessions--;
		trace({ event: 'close', system_id: session.systemId });
	});
	trace({ event: 'connect', remote: `${session.remoteAddress}:${session.remotePort}` });
});

function onPdu(session, pdu) {
	switch (pdu.command) {
		case 'bind_transceiver':
		case 'bind_transmitter':
		case 'bind_receiver': {
			let status = E.ESME_ROK;
			if (session.bound) status = E.ESME_RALYBND;
			else if (options.systemId && pdu.system_id !== options.systemId) status = E.ESME_RINVSYSID;
			else if (options.systemId && pdu.password !== options.password) status = E.ESME_RINVPASWD;
			session.send(pdu.response(status ? { command_status: status } : { system_id: 'nodesmsc' }));
			if (status === E.ESME_ROK) {
				session.bound = true;
				session.bindCommand = pdu.command;
				session.systemId = pdu.system_id;
				counters.sessions++;
			}
			// The bind is rare: printed even when quiet.
			emit({
				event: 'bind', command: pdu.command, system_id: pdu.system_id,
				interface_version: pdu.interface_version, status,
			});
			return;
		}
		case 'submit_sm':
			onSubmit(session, pdu);
			return;
		case 'enquire_link':
			session.send(pdu.response());
			trace({ event: 'enquire_link', system_id: session.systemId });
			return;
		case 'unbind':
			session.send(pdu.response());
			session.bound = false;
			counters.sessions--;
			emit({ event: 'unbind', system_id: session.systemId });
			return;
		case 'generic_nack':
			trace({ event: 'generic_nack', status: pdu.command_status, sequence_number: pdu.sequence_number });
			return;
		default:
			if (pdu.isResponse()) return; // handled by the send callbacks
			trace({ event: 'unsupported', command: pdu.command, command_id: pdu.command_id });
			session.send(pdu.response({ command_status: E.ESME_RINVCMDID }));
	}
}

function onSubmit(session, pdu) {
	if (!bound(session, false) || session.bindCommand === 'bind_receiver') {
		session.send(pdu.response({ command_status: E.ESME_RINVBNDSTS }));
		return;
	}
	if (options.submitStatus) {
		session.send(pdu.response({ command_status: options.submitStatus }));
		trace({ event: 'submit_refused', status: options.submitStatus, to: sms.shown(pdu.dest_addr_ton, pdu.destination_addr) });
		return;
	}
	const id = (nextId++).toString(16);
	session.send(pdu.response({ message_id: id }));
	counters.submits++;
	let receiptText = '';
	if (!options.quiet) {
		const part = sms.readSms(pdu);
		receiptText = part.text;
		emit({
			event: 'submit', id, system_id: session.systemId,
			from: sms.shown(pdu.source_addr_ton, pdu.source_addr), source_ton: pdu.source_addr_ton, source_npi: pdu.source_addr_npi,
			to: sms.shown(pdu.dest_addr_ton, pdu.destination_addr), dest_ton: pdu.dest_addr_ton, dest_npi: pdu.dest_addr_npi,
			esm_class: pdu.esm_class, data_coding: pdu.data_coding, registered_delivery: pdu.registered_delivery,
			service_type: pdu.service_type, validity_period: pdu.validity_period,
			concat: part.concat, text: part.text,
		});
		collect(pdu, part);
	}
	if (pdu.registered_delivery & 0x03) {
		scheduleReceipt(session, pdu, id, receiptText);
	}
}

// Prints the whole message once its last part came.
function collect(pdu, part) {
	const from = sms.shown(pdu.source_addr_ton, pdu.source_addr);
	const to = sms.shown(pdu.dest_addr_ton, pdu.destination_addr);
	if (!part.concat || part.concat.total <= 1) {
		emit({ event: 'message', to, from, text: part.text, parts: 1 });
		return;
	}
	const { ref, total, seq } = part.concat;
	const key = `${from}\u0000${to}\u0000${ref}\u0000${total}`;
	let entry = partials.get(key);
	if (!entry) {
		entry = { parts: new Array(total).fill(null), count: 0 };
		partials.set(key, entry);
	}
	if (seq >= 1 && seq <= total && entry.parts[seq - 1] === null) {
		entry.parts[seq - 1] = part.text;
		entry.count++;
	}
	if (entry.count === total) {
		partials.delete(key);
		emit({ event: 'message', to, from, text: entry.parts.join(''), parts: total });
	}
}

// ------------------------------------------------------------------------------ receipts

// Receipts due, sent in batches by one timer rather than one timer per submit.
let dueReceipts = [];
let receiptTimer = null;

function scheduleReceipt(session, pdu, id, text) {
	dueReceipts.push({
		session,
		source: { ton: pdu.dest_addr_ton, npi: pdu.dest_addr_npi, addr: pdu.destination_addr },
		dest: { ton: pdu.source_addr_ton, npi: pdu.source_addr_npi, addr: pdu.source_addr },
		id,
		text,
		submitted: new Date(),
	});
	if (!receiptTimer) receiptTimer = setTimeout(sendReceipts, options.receiptDelayMs);
}

function sendReceipts() {
	receiptTimer = null;
	const batch = dueReceipts;
	dueReceipts = [];
	const stat = options.receiptStat;
	const done = sms.smppDate(new Date());
	const err = stat === 'DELIVRD' ? '000' : '001';
	const dlvrd = stat === 'DELIVRD' ? '001' : '000';
	for (const r of batch) {
		const session = receiverFor(r.session);
		if (!session) {
			counters.receipts_refused++;
			trace({ event: 'receipt_dropped', id: r.id, reason: 'no bound receiver' });
			continue;
		}
		const decimal = BigInt(`0x${r.id}`).toString(10);
		const text = [...r.text.replace(/[^\x20-\x7e]/g, '?')].slice(0, 20).join('');
		const body = `id:${decimal} sub:001 dlvrd:${dlvrd} submit date:${sms.smppDate(r.submitted)} done date:${done} stat:${stat} err:${err} text:${text}`;
		const fields = {
			source_addr_ton: r.source.ton, source_addr_npi: r.source.npi, source_addr: r.source.addr,
			dest_addr_ton: r.dest.ton, dest_addr_npi: r.dest.npi, destination_addr: r.dest.addr,
			esm_class: 0x04, data_coding: 0, short_message: Buffer.from(body, 'ascii'),
		};
		if (options.receiptTlv) {
			fields.receipted_message_id = r.id;
			fields.message_state = MESSAGE_STATE[stat] || MESSAGE_STATE.UNKNOWN;
		}
		session.deliver_sm(fields, (resp) => {
			if (resp.command_status === E.ESME_ROK) counters.receipts++;
			else counters.receipts_refused++;
			trace({ event: 'receipt_acked', id: r.id, status: resp.command_status });
		});
		trace({ event: 'receipt_sent', id: r.id, decimal, tlv: options.receiptTlv, stat });
	}
}

// ------------------------------------------------------------------------------ MO

let moReference = 0;

function sendMo(from, to, text) {
	const session = receiverFor(null);
	if (!session) {
		emit({ event: 'mo_failed', reason: 'no bound session receives' });
		return;
	}
	const { dataCoding, parts } = sms.splitText(text);
	const source = sms.addressFields(from);
	const dest = sms.addressFields(to);
	const ref = (moReference = (moReference + 1) & 0xff);
	parts.forEach((octets, i) => {
		let shortMessage = octets;
		let esmClass = 0;
		if (parts.length > 1) {
			shortMessage = Buffer.concat([Buffer.from([5, 0, 3, ref, parts.length, i + 1]), octets]);
			esmClass = 0x40;
		}
		session.deliver_sm({
			source_addr_ton: source.ton, source_addr_npi: source.npi, source_addr: source.addr,
			dest_addr_ton: dest.ton, dest_addr_npi: dest.npi, destination_addr: dest.addr,
			esm_class: esmClass, data_coding: dataCoding, short_message: shortMessage,
		}, (resp) => {
			counters.mo++;
			emit({ event: 'mo_acked', status: resp.command_status, part: i + 1, parts: parts.length });
		});
	});
	trace({ event: 'mo_sent', from, to, text, data_coding: dataCoding, parts: parts.length });
}

// ------------------------------------------------------------------------------ stdin

function quit() {
	if (statsTimer) clearInterval(statsTimer);
	server.close();
	for (const s of sessions) s.destroy();
	emit({ event: 'quit' });
	process.exit(0);
}

sms.readLines(command, quit);

function command(line) {
	const m = /^\s*(\S+)\s*(.*)$/.exec(line);
	if (!m) return;
	const [, name, rest] = m;
	switch (name) {
		case 'mo': {
			const args = /^(\S+)\s+(\S+)\s(.*)$/.exec(rest);
			if (!args) {
				emit({ event: 'error', message: 'usage: mo <from> <to> <text>' });
				return;
			}
			sendMo(args[1], args[2], args[3]);
			return;
		}
		case 'set': {
			const [key, value] = rest.split(/\s+/);
			if (key === 'receipt_tlv' && (value === '0' || value === '1')) options.receiptTlv = value === '1';
			else if (key === 'receipt_stat' && MESSAGE_STATE[value]) options.receiptStat = value;
			else if (key === 'receipt_delay_ms' && Number(value) >= 0) options.receiptDelayMs = Number(value);
			else if (key === 'submit_status' && Number(value) >= 0) options.submitStatus = Number(value);
			else {
				emit({ event: 'error', message: `cannot set ${rest}` });
				return;
			}
			emit({ event: 'set', key, value });
			return;
		}
		case 'quit':
			quit();
			return;
		default:
			emit({ event: 'error', message: `unknown command ${name}` });
	}
}

// ------------------------------------------------------------------------------ start

let statsTimer = null;
server.on('error', (e) => {
	process.stderr.write(`smsc.js: ${e.message}\n`);
	process.exit(1);
});
server.listen(options.port, '127.0.0.1', () => {
	emit({ event: 'ready', port: server.address().port });
	if (options.quiet) {
		statsTimer = setInterval(() => emit({ event: 'stats', ...counters }), 1000);
	}
});
