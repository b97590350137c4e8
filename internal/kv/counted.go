package kv

import (
	"context"
	"sync/atomic"
)

// Counted is a DB that counts the writes made through it, so that a memo of what was read through
// it stays good while the count has not moved (Generation, read before the read it memoizes).
// It suits a DB that only this process writes (badger): the writes of other nodes of a fleet
// would not be counted, and the wrapper hides the optional interfaces (Locker) of the DB it wraps.
type Counted struct {
	DB
	n atomic.Uint64
}

// NewCounted counts the writes made to db through the returned DB.
func NewCounted(db DB) *Counted { return &Counted{DB: db} }

func (c *Counted) Update(ctx context.Context, fn func(Txn) error) error {
	defer c.n.Add(1) // after the commit: a read that began before it sees a new generation
	return c.DB.Update(ctx, fn)
}

func (c *Counted) Write(ctx context.Context, ops []Op) error {
	defer c.n.Add(1)
	return c.DB.Write(ctx, ops)
}

// Generation is the number of writes begun through c and ended.
func (c *Counted) Generation() uint64 { return c.n.Load() }
