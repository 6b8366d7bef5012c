#!/usr/bin/env node
// An integrator's ESME on node-smpp (farhadi/node-smpp), an SMPP implementation not written in
// parla, for the tests of parla's SMPP server (tests/smpp_server.rs) and its benchmark.
//
//   node esme.js
//
// It prints one JSON line per event on stdout (first {"event":"ready"}) and takes commands on
// stdin, one a line. Sessions have names, so one process can hold several binds.
//
//   connect NAME PORT MODE SYSTEM_ID PASSWORD
//                       MODE: trx | tx | rx. Connects to 127.0.0.1:PORT and binds; prints
//                       {"event":"bind","name","status"} (0: bound), and {"event":"close"} when
//                       the connection ends
//   listen NAME SYSTEM_ID PASSWORD
//                       listens on a free port of 127.0.0.1 for an SMSC's outbind; prints
//                       {"event":"listening","name","port"}. An outbind prints
//                       {"event":"outbind","name","system_id","password"} and is answered with
//                       bind_receiver (SYSTEM_ID, PASSWORD) on that connection, which is then
//                       the session NAME (its bind prints {"event":"bind",...} as for connect)
//   submit NAME TAG JSON
//                       a message: JSON {"to","from","text", "coding": "gsm" | "ucs2" |
//                       "latin1" (default: gsm when it fits, else ucs2), "long": "udh" | "sar" |
//                       "payload" (how a text of several parts goes; default udh),
//                       "registered_delivery", "validity_period", "schedule_delivery_time"};
//                       numbers starting with + go as TON 1, others as TON 5 (alphanumeric)
//                       or TON 0 (digits). One submit_sm per part; each answer prints
//                       {"event":"submit_resp","name","tag","part","parts","status","message_id"}
//   query NAME TAG ID   query_sm; prints {"event":"query_resp","tag","status","message_state",
//                       "final_date","message_id"}
//   cancel NAME TAG ID  cancel_sm; prints {"event":"cancel_resp","tag","status"}
//   raw NAME HEX        writes these octets as they are (malformed PDUs); what comes back is
//                       printed as {"event":"pdu",...}
//   deliver_status NAME N | none
//                       answer later deliver_sm with command_status N (default 0), or not at
//                       all
//   unbind NAME         unbind; prints {"event":"unbind_resp","name","status"}
//   drop NAME           closes the connection without unbind
//   bench NAME COUNT WINDOW TO FROM
//                       COUNT submit_sm of a short GSM text with receipts, at most WINDOW
//                       unanswered; prints {"event":"bench_done","accepted","refused",
//                       "seconds"} and, while receipts come, {"event":"receipts","count"}
//                       (quiet: no per-PDU lines while it runs)
//   quit                closes every session and exits 0 (so does the end of stdin)
//
// Every PDU received is printed as {"event":"pdu","name","command","command_status",
// "sequence_number"}; deliver_sm also as {"event":"deliver",...} with its decoded text,
// concatenation and receipt TLVs.
'use strict';

const smpp = require('smpp');
const sms = require('./sms');

sms.rawCodec(smpp);

const sessions = new Map();
let quiet = false;
let receiptsSeen = 0;

function emit(event) {
	process.stdout.write(JSON.stringify(event) + '\n');
}

function trace(event) {
	if (!quiet) emit(event);
}

function address(number) {
	if (number === undefined || number === '') return { ton: 0, npi: 0, addr: '' };
	if (number.startsWith('+')) return { ton: 1, npi: 1, addr: number.slice(1) };
	if (/^\d+$/.test(number)) return { ton: 0, npi: 1, addr: number };
	return { ton: 5, npi: 0, addr: number };
}

function connect(name, port, mode, systemId, password) {
	const session = smpp.connect({ host: '127.0.0.1', port: Number(port) });
	const state = { session, deliverStatus: 0, name };
	sessions.set(name, state);
	session.on('connect', () => {
		const bind = { trx: 'bind_transceiver', tx: 'bind_transmitter', rx: 'bind_receiver' }[mode];
		session[bind]({ system_id: systemId, password, interface_version: 0x34 }, (pdu) => {
			emit({ event: 'bind', name, status: pdu.command_status, system_id: pdu.system_id });
		});
	});
	session.on('pdu', (pdu) => onPdu(state, pdu));
	session.on('error', (e) => emit({ event: 'error', name, message: e.message }));
	session.on('close', () => emit({ event: 'close', name }));
}

function listen(name, systemId, password) {
	const server = smpp.createServer({ debug: false }, (session) => {
		const state = { session, deliverStatus: 0, name };
		sessions.set(name, state);
		session.on('pdu', (pdu) => {
			if (pdu.command !== 'outbind') return onPdu(state, pdu);
			emit({ event: 'outbind', name, system_id: pdu.system_id, password: pdu.password });
			session.bind_receiver({ system_id: systemId, password, interface_version: 0x34 }, (resp) => {
				emit({ event: 'bind', name, status: resp.command_status, system_id: resp.system_id });
			});
		});
		session.on('error', (e) => emit({ event: 'error', name, message: e.message }));
		session.on('close', () => emit({ event: 'close', name }));
	});
	server.listen(0, '127.0.0.1', () => emit({ event: 'listening', name, port: server.address().port }));
}

function onPdu(state, pdu) {
	const { session, name } = state;
	trace({ event: 'pdu', name, command: pdu.command, command_status: pdu.command_status, sequence_number: pdu.sequence_number });
	switch (pdu.command) {
		case 'deliver_sm': {
			const part = sms.readSms(pdu);
			const receipt = (pdu.esm_class & 0x3c) !== 0;
			if (receipt) receiptsSeen++;
			trace({
				event: 'deliver', name, esm_class: pdu.esm_class, data_coding: pdu.data_coding,
				from: sms.shown(pdu.source_addr_ton, pdu.source_addr), to: sms.shown(pdu.dest_addr_ton, pdu.destination_addr),
				source_ton: pdu.source_addr_ton, dest_ton: pdu.dest_addr_ton,
				text: part.text, concat: part.concat, receipt,
				receipted_message_id: pdu.receipted_message_id, message_state: pdu.message_state,
				payload: pdu.message_payload !== undefined && pdu.message_payload.length > 0,
				sequence_number: pdu.sequence_number,
			});
			if (state.deliverStatus !== null) {
				session.send(pdu.response({ command_status: state.deliverStatus }));
			}
			return;
		}
		case 'enquire_link':
			session.send(pdu.response());
			return;
		case 'unbind':
			session.send(pdu.response());
			emit({ event: 'unbound_by_server', name });
			return;
		default:
	}
}

function encodeText(text, coding) {
	if (coding === 'latin1') {
		return { dataCoding: 3, octets: [...text].map((c) => Buffer.from(c, 'latin1')), limit: [140, 134] };
	}
	const septets = coding !== 'ucs2' && sms.gsmEncode(text);
	if (septets) {
		return { dataCoding: 0, octets: [...text].map((c) => Buffer.from(sms.GSM_ENCODE.get(c))), limit: [160, 153] };
	}
	return { dataCoding: 8, octets: [...text].map((c) => sms.ucs2Encode(c)), limit: [140, 134] };
}

let reference = 0;

function submit(name, tag, spec) {
	const state = sessions.get(name);
	if (!state) return emit({ event: 'error', message: `no session ${name}` });
	const { dataCoding, octets, limit } = encodeText(spec.text, spec.coding);
	const total = octets.reduce((n, o) => n + o.length, 0);
	let parts = [];
	if (total <= limit[0] || spec.long === 'payload') {
		parts = [Buffer.concat(octets)];
	} else {
		let current = [];
		let length = 0;
		for (const o of octets) {
			if (length + o.length > limit[1]) {
				parts.push(Buffer.concat(current));
				current = [];
				length = 0;
			}
			current.push(o);
			length += o.length;
		}
		if (current.length) parts.push(Buffer.concat(current));
	}
	const source = address(spec.from);
	const dest = address(spec.to);
	const ref = (reference = (reference + 1) & 0xff);
	parts.forEach((body, i) => {
		const fields = {
			source_addr_ton: source.ton, source_addr_npi: source.npi, source_addr: source.addr,
			dest_addr_ton: dest.ton, dest_addr_npi: dest.npi, destination_addr: dest.addr,
			registered_delivery: spec.registered_delivery || 0, data_coding: dataCoding, esm_class: 0,
			validity_period: spec.validity_period || '', schedule_delivery_time: spec.schedule_delivery_time || '',
		};
		if (spec.long === 'payload' && total > limit[0]) {
			fields.short_message = Buffer.alloc(0);
			fields.message_payload = body;
		} else if (parts.length > 1 && spec.long === 'sar') {
			fields.short_message = body;
			fields.sar_msg_ref_num = ref;
			fields.sar_total_segments = parts.length;
			fields.sar_segment_seqnum = i + 1;
		} else if (parts.length > 1) {
			fields.short_message = Buffer.concat([Buffer.from([5, 0, 3, ref, parts.length, i + 1]), body]);
			fields.esm_class = 0x40;
		} else {
			fields.short_message = body;
		}
		state.session.submit_sm(fields, (pdu) => {
			emit({ event: 'submit_resp', name, tag, part: i + 1, parts: parts.length, status: pdu.command_status, message_id: pdu.message_id });
		});
	});
}

function bench(name, count, window, to, from) {
	const state = sessions.get(name);
	if (!state) return emit({ event: 'error', message: `no session ${name}` });
	quiet = true;
	receiptsSeen = 0;
	const source = address(from);
	const dest = address(to);
	const body = Buffer.from(sms.gsmEncode('Your code is 123456').map((b) => b));
	let sent = 0;
	let answered = 0;
	let accepted = 0;
	let refused = 0;
	const started = process.hrtime.bigint();
	const reporter = setInterval(() => emit({ event: 'receipts', count: receiptsSeen, accepted }), 1000);
	const next = () => {
		while (sent < count && sent - answered < window) {
			sent++;
			state.session.submit_sm({
				source_addr_ton: source.ton, source_addr_npi: source.npi, source_addr: source.addr,
				dest_addr_ton: dest.ton, dest_addr_npi: dest.npi, destination_addr: dest.addr,
				registered_delivery: 1, data_coding: 0, short_message: body,
			}, (pdu) => {
				answered++;
				if (pdu.command_status === 0) accepted++;
				else refused++;
				if (answered === count) {
					const seconds = Number(process.hrtime.bigint() - started) / 1e9;
					emit({ event: 'bench_done', accepted, refused, seconds });
					const waitReceipts = setInterval(() => {
						if (receiptsSeen >= accepted) {
							clearInterval(waitReceipts);
							clearInterval(reporter);
							const all = Number(process.hrtime.bigint() - started) / 1e9;
							emit({ event: 'receipts_done', count: receiptsSeen, seconds: all });
						}
					}, 20);
				} else {
					next();
				}
			});
		}
	};
	next();
}

function command(line) {
	const [cmd, name, ...rest] = line.trim().split(/\s+/);
	if (!cmd) return;
	const state = sessions.get(name);
	switch (cmd) {
		case 'connect':
			connect(name, ...rest);
			return;
		case 'listen':
			listen(name, ...rest);
			return;
		case 'submit': {
			const tag = rest[0];
			const json = line.trim().split(/\s+/).slice(3).join(' ');
			submit(name, tag, JSON.parse(json));
			return;
		}
		case 'query':
			state.session.query_sm({ message_id: rest[1] }, (pdu) => {
				emit({
					event: 'query_resp', name, tag: rest[0], status: pdu.command_status, message_id: pdu.message_id,
					message_state: pdu.message_state, final_date: pdu.final_date,
				});
			});
			return;
		case 'cancel':
			state.session.cancel_sm({ message_id: rest[1] }, (pdu) => {
				emit({ event: 'cancel_resp', name, tag: rest[0], status: pdu.command_status });
			});
			return;
		case 'raw':
			state.session.socket.write(Buffer.from(rest[0], 'hex'));
			return;
		case 'deliver_status':
			state.deliverStatus = rest[0] === 'none' ? null : Number(rest[0]);
			emit({ event: 'set', name, deliver_status: state.deliverStatus });
			return;
		case 'unbind':
			state.session.unbind({}, (pdu) => emit({ event: 'unbind_resp', name, status: pdu.command_status }));
			return;
		case 'drop':
			state.session.socket.destroy();
			return;
		case 'bench':
			bench(name, Number(rest[0]), Number(rest[1]), rest[2], rest[3]);
			return;
		case 'quit':
			quit();
			return;
		default:
			emit({ event: 'error', message: `unknown command ${cmd}` });
	}
}

function quit() {
	for (const { session } of sessions.values()) session.socket.destroy();
	emit({ event: 'quit' });
	process.exit(0);
}

sms.readLines((line) => {
	try {
		command(line);
	} catch (e) {
		emit({ event: 'error', message: `${line}: ${e.message}` });
	}
}, quit);
emit({ event: 'ready' });
