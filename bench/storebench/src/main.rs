//! Micro-benchmark: parla's write pattern on sled 0.34, redb and fjall.
//!
//! usage: storebench <sled|redb|fjall> <G> <full|intake> [N] [dir]
//!
//! Prints one line of key=value results. Each case should run in its own process so that
//! VmHWM (peak RSS) is per case.

use std::path::{Path, PathBuf};
use std::time::Instant;

const CACHE: usize = 32 << 20;

// ---------- deterministic PRNG (splitmix64), no external crate ----------
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

// ---------- per-message data ----------
struct Msg {
    id: [u8; 16],
    due: u64,
    idem: [u8; 16],
    remote: [u8; 12],
}

fn make_msgs(n: usize) -> Vec<Msg> {
    let mut rng = Rng(0x5eed);
    let t0: u64 = 1_795_000_000_000; // ms
    (0..n)
        .map(|i| {
            let mut id = [0u8; 16];
            // ULID-like: 48-bit time-ish counter in the high bytes, random low bytes.
            id[..8].copy_from_slice(&((t0 + i as u64) << 16).to_be_bytes());
            rng.fill(&mut id[8..]);
            let mut idem = [0u8; 16];
            rng.fill(&mut idem);
            let mut remote = [0u8; 12];
            rng.fill(&mut remote);
            Msg { id, due: t0 + i as u64, idem, remote }
        })
        .collect()
}

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// A record of `len` bytes: text-like (phone numbers, status, body), with the id in it, so it is
/// not trivially all-zero but also not incompressible random bytes.
fn record(m: &Msg, stage: &str, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(b"{\"id\":\"");
    for b in m.id {
        v.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    v.extend_from_slice(b"\",\"to\":\"+4917012345678\",\"from\":\"+4915098765432\",\"status\":\"");
    v.extend_from_slice(stage.as_bytes());
    v.extend_from_slice(format!("\",\"due\":{},\"body\":\"", m.due).as_bytes());
    let body = b"Your verification code is 123456. Do not share it with anyone. Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. ";
    while v.len() < len - 2 {
        let take = (len - 2 - v.len()).min(body.len());
        v.extend_from_slice(&body[..take]);
    }
    v.extend_from_slice(b"\"}");
    v.truncate(len);
    v
}

// ---------- one atomic batch of operations ----------
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Del(Vec<u8>),
}

#[derive(Default)]
struct Counters {
    queued: i64,
    sending: i64,
    accepted: i64,
    delivered: i64,
}

impl Counters {
    /// As parla does: the counts go into the same atomic batch, once per batch.
    fn write(&self, ops: &mut Vec<Op>) {
        for (name, v) in [
            (&b"/queued"[..], self.queued),
            (&b"/sending"[..], self.sending),
            (&b"/accepted"[..], self.accepted),
            (&b"/delivered"[..], self.delivered),
        ] {
            ops.push(Op::Put(key(b'c', &[name]), (v as u64).to_be_bytes().to_vec()));
        }
    }
}

fn step_ops(step: usize, msgs: &[Msg], c: &mut Counters) -> Vec<Op> {
    let mut ops = Vec::with_capacity(msgs.len() * 3 + 4);
    for m in msgs {
        let mkey = key(b'm', &[&m.id]);
        match step {
            0 => {
                ops.push(Op::Put(mkey, record(m, "queued", 300)));
                ops.push(Op::Put(key(b'q', &[&m.due.to_be_bytes(), &m.id]), Vec::new()));
                ops.push(Op::Put(key(b'k', &[&m.idem]), m.id.to_vec()));
                c.queued += 1;
            }
            1 => {
                ops.push(Op::Put(mkey, record(m, "sending", 300)));
                ops.push(Op::Del(key(b'q', &[&m.due.to_be_bytes(), &m.id])));
                ops.push(Op::Put(key(b's', &[&m.id]), Vec::new()));
                c.queued -= 1;
                c.sending += 1;
            }
            2 => {
                ops.push(Op::Put(mkey, record(m, "accepted", 320)));
                ops.push(Op::Del(key(b's', &[&m.id])));
                ops.push(Op::Put(key(b'r', &[&m.remote]), m.id.to_vec()));
                c.sending -= 1;
                c.accepted += 1;
            }
            _ => {
                ops.push(Op::Put(mkey, record(m, "delivered", 340)));
                ops.push(Op::Del(key(b'r', &[&m.remote])));
                c.accepted -= 1;
                c.delivered += 1;
            }
        }
    }
    c.write(&mut ops);
    ops
}

// ---------- engines ----------
trait Store {
    /// Apply `ops` atomically and make them durable before returning.
    fn commit(&mut self, ops: Vec<Op>);
    /// All keys (for the optional sanity check only).
    fn keys(&self) -> Vec<Vec<u8>>;
}

struct SledStore {
    db: sled::Db,
    dir: PathBuf,
}
impl Store for SledStore {
    fn commit(&mut self, ops: Vec<Op>) {
        let mut b = sled::Batch::default();
        for op in ops {
            match op {
                Op::Put(k, v) => b.insert(k, v),
                Op::Del(k) => b.remove(k),
            }
        }
        self.db.apply_batch(b).unwrap();
        self.db.flush().unwrap();
        // sled's flush uses sync_file_range only: fdatasync every file in the directory.
        sync_tree(&self.dir);
    }
    fn keys(&self) -> Vec<Vec<u8>> {
        self.db.iter().keys().map(|k| k.unwrap().to_vec()).collect()
    }
}
fn sync_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            sync_tree(&e.path());
        } else if ft.is_file() {
            if let Ok(f) = std::fs::File::open(e.path()) {
                f.sync_data().unwrap();
            }
        }
    }
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("t");
struct RedbStore {
    db: redb::Database,
}
impl Store for RedbStore {
    fn commit(&mut self, ops: Vec<Op>) {
        let mut tx = self.db.begin_write().unwrap();
        tx.set_durability(redb::Durability::Immediate).unwrap();
        {
            let mut t = tx.open_table(TABLE).unwrap();
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        t.insert(k.as_slice(), v.as_slice()).unwrap();
                    }
                    Op::Del(k) => {
                        t.remove(k.as_slice()).unwrap();
                    }
                }
            }
        }
        tx.commit().unwrap();
    }
    fn keys(&self) -> Vec<Vec<u8>> {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.db.begin_read().unwrap();
        let t = tx.open_table(TABLE).unwrap();
        t.iter().unwrap().map(|r| r.unwrap().0.value().to_vec()).collect()
    }
}

struct FjallStore {
    db: fjall::Database,
    ks: fjall::Keyspace,
}
impl Store for FjallStore {
    fn commit(&mut self, ops: Vec<Op>) {
        let mut b = self.db.batch().durability(Some(fjall::PersistMode::SyncData));
        for op in ops {
            match op {
                Op::Put(k, v) => b.insert(&self.ks, k, v),
                Op::Del(k) => b.remove(&self.ks, k),
            }
        }
        b.commit().unwrap();
    }
    fn keys(&self) -> Vec<Vec<u8>> {
        self.ks.iter().map(|g| g.key().unwrap().to_vec()).collect()
    }
}

// ---------- measurement helpers ----------
fn cpu_secs() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut sum = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        if md.is_dir() {
            sum += disk_bytes(&e.path());
        } else {
            sum += md.blocks() * 512; // allocated, not apparent
        }
    }
    sum
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        eprintln!("usage: storebench <sled|redb|fjall> <G> <full|intake> [N] [dir]");
        std::process::exit(2);
    }
    let engine = a[1].as_str();
    let g: usize = a[2].parse().unwrap();
    let variant = a[3].as_str();
    let n: usize = a.get(4).map(|s| s.parse().unwrap()).unwrap_or(200_000);
    let dir = PathBuf::from(a.get(5).cloned().unwrap_or_else(|| {
        format!("/tmp/storebench-{engine}-{g}-{variant}-{}", std::process::id())
    }));
    let steps = match variant {
        "full" => 4,
        "intake" => 1,
        _ => panic!("variant must be full or intake"),
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let msgs = make_msgs(n);

    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    let mut store: Box<dyn Store> = match engine {
        "sled" => {
            let db = sled::Config::new()
                .path(&dir)
                .cache_capacity(CACHE as u64)
                .flush_every_ms(None) // as parla: it flushes itself after every group
                .open()
                .unwrap();
            Box::new(SledStore { db, dir: dir.clone() })
        }
        "redb" => {
            let db = redb::Database::builder()
                .set_cache_size(CACHE)
                .create(dir.join("store.redb"))
                .unwrap();
            Box::new(RedbStore { db })
        }
        "fjall" | "fjall-mt8" => {
            let db = fjall::Database::builder(&dir).cache_size(CACHE as u64).open().unwrap();
            // fjall-mt8: memtable capped at 8 MiB (default 64 MiB) to bound memory like parla.
            let mt: u64 = if engine == "fjall-mt8" { 8 << 20 } else { 64 << 20 };
            let ks = db
                .keyspace("t", || fjall::KeyspaceCreateOptions::default().max_memtable_size(mt))
                .unwrap();
            Box::new(FjallStore { db, ks })
        }
        _ => panic!("unknown engine"),
    };

    // Pipeline like the daemon: at group t, intake group t, claim group t-1, accepted group t-2,
    // delivered group t-3. Each step of each group is its own atomic batch + durable commit.
    let groups = n.div_ceil(g);
    let mut c = Counters::default();
    let mut commits = 0u64;
    for t in 0..groups + steps - 1 {
        for step in 0..steps {
            if t < step || t - step >= groups {
                continue;
            }
            let gi = t - step;
            let slice = &msgs[gi * g..((gi + 1) * g).min(n)];
            let ops = step_ops(step, slice, &mut c);
            store.commit(ops);
            commits += 1;
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu_loop = cpu_secs() - cpu0;
    if std::env::var_os("VERIFY").is_some() {
        let mut counts = std::collections::BTreeMap::new();
        for k in store.keys() {
            *counts.entry(k[0] as char).or_insert(0usize) += 1;
        }
        eprintln!("verify: keys per prefix {counts:?}");
    }
    drop(store); // includes engine shutdown (background threads, final flushes)
    let cpu_total = cpu_secs() - cpu0;
    let wall_total = t0.elapsed().as_secs_f64();
    let hwm = vm_hwm_kib();
    let disk = disk_bytes(&dir);
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "engine={engine} G={g} variant={variant} N={n} commits={commits} wall_s={wall:.2} \
         msgs_per_s={:.0} cpu_s={cpu_loop:.2} cpu_us_per_msg={:.1} cpu_s_incl_close={cpu_total:.2} \
         wall_s_incl_close={wall_total:.2} peak_rss_mib={:.1} disk_mib={:.1}",
        n as f64 / wall,
        cpu_loop * 1e6 / n as f64,
        hwm as f64 / 1024.0,
        disk as f64 / (1024.0 * 1024.0),
    );
}
