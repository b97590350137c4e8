package tls

import (
	"context"
	"log/slog"
	"slices"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapLogger gives certmagic (which logs through zap) a logger that writes to h, so that a failed
// ACME renewal or a storage error reaches cove's log instead of being discarded. Lines carry
// logger=certmagic.<part> (certmagic names its parts: obtain, renew, maintenance, …).
func zapLogger(h slog.Handler) *zap.Logger {
	return zap.New(&zapCore{h: h}).Named("certmagic")
}

// zapCore is a zapcore.Core over an slog.Handler: zap's levels map to slog's (DPanic and above
// to Error), zap's fields become attributes, zap's "error" key becomes cove's "err". It is safe
// for concurrent use as far as h is.
type zapCore struct {
	h slog.Handler
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (c *zapCore) Enabled(l zapcore.Level) bool {
	return c.h.Enabled(context.Background(), slogLevel(l))
}

func (c *zapCore) With(fields []zapcore.Field) zapcore.Core {
	if len(fields) == 0 {
		return c
	}
	return &zapCore{h: c.h.WithAttrs(attrsOf(fields))}
}

func (c *zapCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *zapCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	r := slog.NewRecord(ent.Time, slogLevel(ent.Level), ent.Message, 0)
	if ent.LoggerName != "" {
		r.AddAttrs(slog.String("logger", ent.LoggerName))
	}
	r.AddAttrs(attrsOf(fields)...)
	return c.h.Handle(context.Background(), r)
}

func (c *zapCore) Sync() error { return nil }

// attrsOf encodes zap fields (errors, durations, string lists, objects) the way zap would, then
// turns them into attributes in key order.
func attrsOf(fields []zapcore.Field) []slog.Attr {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	return attrsOfMap(enc.Fields)
}

func attrsOfMap(m map[string]any) []slog.Attr {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	attrs := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		v := m[k]
		if k == "error" {
			k = "err"
		}
		if sub, ok := v.(map[string]any); ok {
			attrs = append(attrs, slog.Attr{Key: k, Value: slog.GroupValue(attrsOfMap(sub)...)})
			continue
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	return attrs
}

var _ zapcore.Core = (*zapCore)(nil)
