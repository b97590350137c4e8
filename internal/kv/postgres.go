package kv

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is the DB of a fleet: every node's records in one PostgreSQL database, in the
// table kv (migrations/). Transactions are SERIALIZABLE, so a transaction that read what
// another changed fails with ErrConflict, as badger's do; reads see one snapshot.
type Postgres struct {
	pool *pgxpool.Pool
}

//go:embed migrations/*.sql
var migrations embed.FS

// SchemaVersion is the version of the schema this binary writes: the number of its last
// migration. A database of a newer version is refused (a newer cove wrote it).
func SchemaVersion() int {
	names, _ := fs.Glob(migrations, "migrations/*.sql")
	return len(names)
}

// ErrSchemaTooNew means the database was migrated by a newer cove than this one.
var ErrSchemaTooNew = errors.New("the database's schema is newer than this cove: upgrade cove, or point it at another database")

// OpenPostgres connects to the database of dsn, applies the migrations it lacks (in one
// transaction each, under an advisory lock, so that nodes starting together migrate once) and
// returns the DB. It refuses a schema newer than the binary's.
func OpenPostgres(ctx context.Context, dsn string) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("storage.metadata.postgres.dsn: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		// pgx's default is the number of CPUs, at least 4: a node holding fleet-wide locks across
		// transactions (Lock, TryLock) needs more than that beside its requests.
		cfg.MaxConns = 32
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("storage.metadata.postgres.dsn: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("storage.metadata.postgres.dsn: cannot reach the database: %w", err)
	}
	p := &Postgres{pool: pool}
	if err := p.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return p, nil
}

// migrateLock is the advisory lock key of migrations.
const migrateLock = 0x636f7665 // "cove"

func (p *Postgres) migrate(ctx context.Context) error {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLock); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrateLock)
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS cove_schema (version integer NOT NULL)"); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var version int
	err = conn.QueryRow(ctx, "SELECT version FROM cove_schema").Scan(&version)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, err := conn.Exec(ctx, "INSERT INTO cove_schema (version) VALUES (0)"); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	if version > len(names) {
		return fmt.Errorf("%w (database version %d, this cove's %d)", ErrSchemaTooNew, version, len(names))
	}
	for i := version; i < len(names); i++ {
		n, _ := strconv.Atoi(strings.SplitN(strings.TrimPrefix(names[i], "migrations/"), "_", 2)[0])
		if n != i+1 {
			return fmt.Errorf("migration %s is out of order", names[i])
		}
		sql, err := migrations.ReadFile(names[i])
		if err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "UPDATE cove_schema SET version = $1", i+1)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", names[i], err)
		}
	}
	return nil
}

// Ping reports whether the database answers, for readiness.
func (p *Postgres) Ping(ctx context.Context) error { return p.pool.Ping(ctx) }

// unavailable marks an error of a database that cannot be reached ErrUnavailable (a 503 for the
// caller, not a 500); other errors are returned as they are.
func unavailable(err error) error {
	var ce *pgconn.ConnectError
	var ne *net.OpError
	var pe *pgconn.PgError
	down := errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, net.ErrClosed) || pgconn.Timeout(err) || pgconn.SafeToRetry(err) ||
		// 08: connection exception; 57P0x: the server shuts down, crashed, or is starting.
		(errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P")))
	if err != nil && down && !errors.Is(err, ErrUnavailable) {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}

// View implements DB.
func (p *Postgres) View(ctx context.Context, fn func(Txn) error) error {
	return unavailable(pgx.BeginTxFunc(ctx, p.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		return fn(&pgTxn{ctx: ctx, tx: tx})
	}))
}

// Update implements DB.
func (p *Postgres) Update(ctx context.Context, fn func(Txn) error) error {
	err := pgx.BeginTxFunc(ctx, p.pool, pgx.TxOptions{IsoLevel: pgx.Serializable}, func(tx pgx.Tx) error {
		return fn(&pgTxn{ctx: ctx, tx: tx})
	})
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01") { // serialization failure, deadlock
		return ErrConflict
	}
	return unavailable(err)
}

// NextID implements DB: an upsert that increments the row, serialized by its row lock.
func (p *Postgres) NextID(ctx context.Context, name string) (int64, error) {
	var n int64
	err := p.pool.QueryRow(ctx, `INSERT INTO kv_sequence (name, value) VALUES ($1, 1)
		ON CONFLICT (name) DO UPDATE SET value = kv_sequence.value + 1 RETURNING value`, name).Scan(&n)
	return n, unavailable(err)
}

// Write implements DB: the ops in transactions of at most writeBatch each.
func (p *Postgres) Write(ctx context.Context, ops []Op) error {
	for len(ops) > 0 {
		n := min(len(ops), writeBatch)
		batch := ops[:n]
		ops = ops[n:]
		err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
			t := &pgTxn{ctx: ctx, tx: tx}
			for _, op := range batch {
				var err error
				switch {
				case op.Delete:
					err = t.Delete(op.Key)
				case !op.Expires.IsZero():
					err = t.SetExpiring(op.Key, op.Value, op.Expires)
				default:
					err = t.Set(op.Key, op.Value)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return unavailable(err)
		}
	}
	return nil
}

// writeBatch is how many ops one transaction of Write applies.
const writeBatch = 500

// Close closes the connections.
func (p *Postgres) Close() error {
	p.pool.Close()
	return nil
}

type pgTxn struct {
	ctx context.Context
	tx  pgx.Tx
}

const live = "(expires_at IS NULL OR expires_at > now())"

func (t *pgTxn) Get(key []byte) ([]byte, error) {
	var v []byte
	err := t.tx.QueryRow(t.ctx, "SELECT value FROM kv WHERE key = $1 AND "+live, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return v, err
}

func (t *pgTxn) Set(key, value []byte) error {
	if value == nil {
		value = []byte{} // an empty value, not SQL's NULL
	}
	_, err := t.tx.Exec(t.ctx, `INSERT INTO kv (key, value, expires_at) VALUES ($1, $2, NULL)
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = NULL`, key, value)
	return err
}

func (t *pgTxn) SetExpiring(key, value []byte, expires time.Time) error {
	if value == nil {
		value = []byte{}
	}
	_, err := t.tx.Exec(t.ctx, `INSERT INTO kv (key, value, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at`, key, value, expires)
	return err
}

func (t *pgTxn) Delete(key []byte) error {
	_, err := t.tx.Exec(t.ctx, "DELETE FROM kv WHERE key = $1", key)
	return err
}

// scanPage is how many rows one query of a scan reads; a scan that stops early reads little.
const scanPage = 256

func (t *pgTxn) Scan(prefix []byte, opts ScanOptions, fn func(key, value []byte) (bool, error)) error {
	end := prefixEnd(prefix)
	cols := "key, value"
	if opts.KeysOnly {
		cols = "key, NULL::bytea"
	}
	var cursor []byte // the last key visited: the next page starts after it
	first := true
	for {
		var (
			where []string
			args  []any
		)
		arg := func(v any) string { args = append(args, v); return "$" + strconv.Itoa(len(args)) }
		where = append(where, "key >= "+arg(append([]byte{}, prefix...))) // nil would be NULL: no row
		if end != nil {
			where = append(where, "key < "+arg(end))
		}
		switch {
		case first && opts.From != nil && !opts.Reverse:
			where = append(where, "key >= "+arg(opts.From))
		case first && opts.From != nil && opts.Reverse:
			where = append(where, "key <= "+arg(opts.From))
		case !first && !opts.Reverse:
			where = append(where, "key > "+arg(cursor))
		case !first && opts.Reverse:
			where = append(where, "key < "+arg(cursor))
		}
		order := "ASC"
		if opts.Reverse {
			order = "DESC"
		}
		q := "SELECT " + cols + " FROM kv WHERE " + strings.Join(where, " AND ") + " AND " + live +
			" ORDER BY key " + order + " LIMIT " + strconv.Itoa(scanPage)
		rows, err := t.tx.Query(t.ctx, q, args...)
		if err != nil {
			return err
		}
		type row struct{ k, v []byte }
		var page []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.k, &r.v); err != nil {
				rows.Close()
				return err
			}
			page = append(page, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, r := range page {
			more, err := fn(r.k, r.v)
			if err != nil || !more {
				return err
			}
		}
		if len(page) < scanPage {
			return nil
		}
		cursor, first = page[len(page)-1].k, false
	}
}

func (t *pgTxn) Expiries(prefix []byte, fn func(key []byte, expires time.Time) (bool, error)) error {
	q := "SELECT key, expires_at FROM kv WHERE key >= $1"
	args := []any{prefix}
	if end := prefixEnd(prefix); end != nil {
		q += " AND key < $2"
		args = append(args, end)
	}
	rows, err := t.tx.Query(t.ctx, q+" AND "+live+" ORDER BY key", args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var key []byte
		var exp *time.Time
		if err := rows.Scan(&key, &exp); err != nil {
			return err
		}
		var at time.Time
		if exp != nil {
			at = *exp
		}
		more, err := fn(key, at)
		if err != nil || !more {
			return err
		}
	}
	return rows.Err()
}

var _ DB = (*Postgres)(nil)

// Truncate removes every record and sequence: for tests that reuse one database.
func (p *Postgres) Truncate(ctx context.Context) error {
	_, err := p.pool.Exec(ctx, "TRUNCATE kv, kv_sequence")
	return err
}

// TryLock takes the fleet-wide lock name if no node holds it (a PostgreSQL advisory lock, held by
// one connection until release): for the jobs that must run once per fleet — garbage collection,
// eviction of the shared tier, the sweep of expired records. ok is false when another node holds
// it.
func (p *Postgres) TryLock(ctx context.Context, name string) (release func(), ok bool, err error) {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return nil, false, err
	}
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", "cove:"+name).Scan(&ok); err != nil || !ok {
		conn.Release()
		return nil, false, err
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock(hashtextextended($1, 0))", "cove:"+name); err != nil {
			conn.Conn().Close(ctx) // closing the session frees its locks
		}
		conn.Release()
	}, true, nil
}

// Lock takes the fleet-wide lock name, waiting for it, and holds it across transactions until
// release (a session advisory lock, the same lock as Txn's Lock). A transaction begun once it is
// held reads what was committed before: a serializable transaction's snapshot is taken when its
// first statement starts, before a lock it then waits for (see the deletes of cache).
func (p *Postgres) Lock(ctx context.Context, name string) (release func(), err error) {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtextextended($1, 0))", "cove:"+name); err != nil {
		conn.Release()
		return nil, unavailable(err)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock(hashtextextended($1, 0))", "cove:"+name); err != nil {
			conn.Conn().Close(ctx) // closing the session frees its locks
		}
		conn.Release()
	}, nil
}

// Sweep deletes the records whose time has passed (they read as absent already): PostgreSQL has
// no expiry of its own. Run it under TryLock("sweep"): once per fleet.
func (p *Postgres) Sweep(ctx context.Context) (int64, error) {
	tag, err := p.pool.Exec(ctx, "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= now()")
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// CheckEmpty is nil when the database holds no cove record and no sequence (a target of cove
// migrate), else an error saying so.
func (p *Postgres) CheckEmpty(ctx context.Context) error {
	var empty bool
	if err := p.pool.QueryRow(ctx, "SELECT NOT EXISTS (SELECT 1 FROM kv) AND NOT EXISTS (SELECT 1 FROM kv_sequence)").Scan(&empty); err != nil {
		return err
	}
	if !empty {
		return errors.New("the target database holds cove records already: migrate into an empty database")
	}
	return nil
}

// Lock takes the fleet-wide lock name until the transaction ends (a PostgreSQL transaction-level
// advisory lock): writers of one name wait for each other across nodes.
func (t *pgTxn) Lock(name string) error {
	_, err := t.tx.Exec(t.ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "cove:"+name)
	return err
}

// Now is the database server's clock: the one time every node of a fleet reads alike.
func (p *Postgres) Now(ctx context.Context) (time.Time, error) {
	var t time.Time
	err := p.pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&t)
	return t.UTC(), err
}
