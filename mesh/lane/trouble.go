package lane

import (
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// trouble throttles the holder's warnings. While the bus is unavailable (a
// NATS node restarting, a stream without quorum), the replay of every held
// key fails and is tried again each second: the chaos suite logged 2,616
// "held key: read failed" warnings in the minute of a node kill, which
// buried everything else. The first failure is a warning; the next ones
// within troubleEvery are debug lines, counted; the next warning after
// that says how many failed, over how many keys, since the last one, and
// the first replay that works after them says they ended (info).
type trouble struct {
	log zerolog.Logger
	now func() time.Time // tests; time.Now when nil

	mu   sync.Mutex
	at   time.Time // the last warning
	n    int       // failures since, not warned
	keys map[string]struct{}
}

// troubleEvery is the shortest gap between two of the holder's warnings.
const troubleEvery = 10 * time.Second

// maxTroubleKeys bounds the keys counted between two warnings.
const maxTroubleKeys = 100000

func (t *trouble) clock() time.Time {
	if t.now != nil {
		return t.now()
	}
	return time.Now()
}

// warn logs msg for kvKey's failed replay step: a warning, or a debug line
// counted for the next warning.
func (t *trouble) warn(kvKey string, err error, msg string) {
	now := t.clock()
	t.mu.Lock()
	if !t.at.IsZero() && now.Sub(t.at) < troubleEvery {
		t.n++
		if t.keys == nil {
			t.keys = map[string]struct{}{}
		}
		if len(t.keys) < maxTroubleKeys {
			t.keys[kvKey] = struct{}{}
		}
		t.mu.Unlock()
		t.log.Debug().Err(err).Str("held_key", kvKey).Msg(msg)
		return
	}
	n, keys, since := t.n, len(t.keys), now.Sub(t.at)
	t.at, t.n, t.keys = now, 0, nil
	t.mu.Unlock()
	ev := t.log.Warn().Err(err).Str("held_key", kvKey)
	if n > 0 {
		ev = ev.Int("more_failures", n).Int("more_keys", keys).Dur("since_last_warning", since)
	}
	ev.Msg(msg)
}

// ok notes a replay step that worked: failures counted since the last
// warning are reported as over.
func (t *trouble) ok() {
	t.mu.Lock()
	if t.n == 0 {
		t.mu.Unlock()
		return
	}
	n, keys := t.n, len(t.keys)
	t.n, t.keys = 0, nil
	t.mu.Unlock()
	t.log.Info().Int("failures", n).Int("keys", keys).
		Msg("held keys: replays work again; failures since the last warning were logged at debug level")
}
