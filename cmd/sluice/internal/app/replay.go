package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"sluice.dev/mesh/topology"
)

// replayFetchWait is how long replay waits for a further message before it
// decides the window is exhausted.
const replayFetchWait = time.Second

// ReplayOptions selects the history `sluice replay` re-sends.
type ReplayOptions struct {
	Since  time.Time // first stored message at or after Since
	Until  time.Time // zero: up to the end of the stream when the replay starts
	Type   string    // empty: every type
	Key    string    // empty: every key
	Reason string    // required, audited
	By     string    // who, audited
	DryRun bool      // count only, publish nothing
	// LatestPerKey re-sends only the newest event of each key and type in
	// the window (its latest state), skipping the older ones.
	LatestPerKey bool
	// Progress is called every ProgressEvery events (0: never).
	Progress      func(n int, seq uint64)
	ProgressEvery int
}

// ReplayRecord is the audit record of a replay, published on
// <prefix>.audit.replay.
type ReplayRecord struct {
	Action string     `json:"action"`
	RunID  string     `json:"run_id"`
	By     string     `json:"by"`
	At     time.Time  `json:"at"`
	Since  time.Time  `json:"since"`
	Until  *time.Time `json:"until,omitempty"`
	Type   string     `json:"type,omitempty"`
	Key    string     `json:"key,omitempty"`
	Reason string     `json:"reason"`
	DryRun bool       `json:"dry_run"`
	Latest bool       `json:"latest_per_key,omitempty"`
	Count  int        `json:"count"`
	Error  string     `json:"error,omitempty"`
}

// ReplayResult is what a replay did.
type ReplayResult struct {
	RunID    string
	Count    int    // events re-published (or counted, in a dry run)
	Skipped  int    // older events of a key skipped (LatestPerKey)
	FirstSeq uint64 // events stream sequences of the first and last event
	LastSeq  uint64
	// Audited is false when no stream stores the audit subject.
	Audited bool
}

// replayFilter narrows the events stream to --type and --key.
func replayFilter(names topology.Names, typ, key string) string {
	t, k := "*", "*"
	if typ != "" {
		t = typ
	}
	if key != "" {
		k = topology.KeyToken(key)
	}
	return names.Config().Prefix + ".events.*." + t + "." + k
}

// Replay re-publishes the stored events of a time window to their ingest
// subjects, in stream order and one at a time (each waits for its ack), so
// per-key order holds. Each copy has a new Nats-Msg-Id (<id>:replay:<run>)
// and the unchanged envelope, so the CRM deduplicates on the event id.
// The audit record is published at the end, also when the replay failed.
func Replay(ctx context.Context, js jetstream.JetStream, names topology.Names, o ReplayOptions) (ReplayResult, error) {
	res := ReplayResult{RunID: newRunID()}
	if strings.TrimSpace(o.Reason) == "" {
		return res, errors.New("replay: --reason is required (it is recorded in the audit)")
	}
	if o.Since.IsZero() {
		return res, errors.New("replay: --since is required")
	}
	if !o.Until.IsZero() && o.Until.Before(o.Since) {
		return res, errors.New("replay: --until is before --since")
	}
	err := replayRun(ctx, js, names, o, &res)
	rec := ReplayRecord{Action: "replay", RunID: res.RunID, By: o.By, At: time.Now().UTC(), Since: o.Since.UTC(),
		Type: o.Type, Key: o.Key, Reason: o.Reason, DryRun: o.DryRun, Latest: o.LatestPerKey, Count: res.Count}
	if !o.Until.IsZero() {
		u := o.Until.UTC()
		rec.Until = &u
	}
	if err != nil {
		rec.Error = err.Error()
	}
	b, _ := json.Marshal(rec)
	am := nats.NewMsg(names.AuditSubject("replay"))
	am.Data = b
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, aerr := js.PublishMsg(actx, am)
	switch {
	case aerr == nil:
		res.Audited = true
	case errors.Is(aerr, jetstream.ErrNoStreamResponse):
	default:
		err = errors.Join(err, fmt.Errorf("audit record: %w", aerr))
	}
	return res, err
}

// replayNotReadyRetries bounds the retries of a replay consumer that does
// not answer yet (see replayRun), replayNotReadyPause apart.
const (
	replayNotReadyRetries = 20
	replayNotReadyPause   = 250 * time.Millisecond
)

// notReadyAgain reports whether err is the "no responders" of a fresh
// ordered consumer on a cluster that does not answer yet and may be tried
// again (replayNotReadyRetries times, counted in *tries); it waits
// replayNotReadyPause first.
func notReadyAgain(err error, tries *int) bool {
	if !errors.Is(err, nats.ErrNoResponders) || *tries >= replayNotReadyRetries {
		return false
	}
	*tries++
	time.Sleep(replayNotReadyPause)
	return true
}

func replayRun(ctx context.Context, js jetstream.JetStream, names topology.Names, o ReplayOptions, res *ReplayResult) error {
	stream, err := js.Stream(ctx, names.EventsStream())
	if err != nil {
		return fmt.Errorf("stream %s: %w", names.EventsStream(), err)
	}
	// The end is fixed now: the copies we publish land in the same stream
	// (and match the filter), so they must not be replayed again.
	endSeq := stream.CachedInfo().State.LastSeq
	if endSeq == 0 {
		return nil
	}
	var latest map[string]uint64 // key token + type -> newest seq in the window
	if o.LatestPerKey {
		// A first pass finds each key's newest event. Per key and type:
		// the types of one key may address different CRM records (a lead
		// under its customer's key), so the newest of each is its state.
		latest = map[string]uint64{}
		err := scanWindow(ctx, stream, names, o, endSeq, func(m jetstream.Msg, seq uint64) error {
			if _, typ, tok, err := names.SubjectParts(m.Subject()); err == nil {
				latest[tok+"\x00"+typ] = seq
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return scanWindow(ctx, stream, names, o, endSeq, func(m jetstream.Msg, seq uint64) error {
		if latest != nil {
			if _, typ, tok, err := names.SubjectParts(m.Subject()); err == nil && latest[tok+"\x00"+typ] != seq {
				res.Skipped++
				return nil
			}
		}
		if !o.DryRun {
			if err := republish(ctx, js, names, m, seq, res.RunID); err != nil {
				return err
			}
		}
		res.Count++
		if res.FirstSeq == 0 {
			res.FirstSeq = seq
		}
		res.LastSeq = seq
		if o.Progress != nil && o.ProgressEvery > 0 && res.Count%o.ProgressEvery == 0 {
			o.Progress(res.Count, seq)
		}
		return nil
	})
}

// scanWindow calls f with every event of the replay window in stream
// order, up to endSeq.
func scanWindow(ctx context.Context, stream jetstream.Stream, names topology.Names, o ReplayOptions, endSeq uint64,
	f func(m jetstream.Msg, seq uint64) error) error {
	since := o.Since
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{replayFilter(names, o.Type, o.Key)},
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &since,
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("replay consumer: %w", err)
	}
	retries := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := cons.Next(jetstream.FetchMaxWait(replayFetchWait))
		if retries < replayNotReadyRetries && (errors.Is(err, nats.ErrNoResponders) ||
			errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)) {
			// On a cluster a fresh ordered consumer can answer "no responders"
			// or nothing for a moment: the window ends only when the consumer
			// says nothing is pending.
			if ci, ierr := cons.Info(ctx); ierr != nil || ci.NumPending > 0 {
				retries++
				time.Sleep(replayNotReadyPause)
				continue
			}
		}
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
			return nil // nothing more in the window
		}
		if err != nil {
			return err
		}
		retries = 0
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		seq := md.Sequence.Stream
		if seq > endSeq || (!o.Until.IsZero() && md.Timestamp.After(o.Until)) {
			return nil
		}
		if err := f(m, seq); err != nil {
			return err
		}
		if md.NumPending == 0 || seq == endSeq {
			return nil
		}
	}
}

// republish sends one stored event back to its ingest subject and waits
// for the ack.
func republish(ctx context.Context, js jetstream.JetStream, names topology.Names, m jetstream.Msg, seq uint64, runID string) error {
	_, typ, keyTok, err := names.SubjectParts(m.Subject())
	if err != nil {
		return fmt.Errorf("event seq %d: %w", seq, err)
	}
	key, err := topology.KeyFromToken(keyTok)
	if err != nil {
		return fmt.Errorf("event seq %d: %w", seq, err)
	}
	out := nats.NewMsg(names.EventSubject(typ, key))
	for k, v := range m.Headers() {
		out.Header[k] = v
	}
	id := m.Headers().Get(nats.MsgIdHdr)
	if id == "" {
		id = "seq-" + strconv.FormatUint(seq, 10)
	}
	out.Header.Set(nats.MsgIdHdr, id+":replay:"+runID)
	out.Header.Set("Sluice-Replay", runID)
	out.Data = m.Data()
	if _, err := js.PublishMsg(ctx, out); err != nil {
		return fmt.Errorf("re-publish event seq %d: %w", seq, err)
	}
	return nil
}

func newRunID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b)
}

// parseWhen reads an RFC 3339 time or a duration meaning "that long ago".
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration like 2h", s)
}

// replayCmd is `sluice replay`.
func replayCmd() *cobra.Command {
	var cfgPath, since, until string
	var o ReplayOptions
	cmd := &cobra.Command{
		Use:   "replay --since TIME [--until TIME] [--type T] [--key K] [--latest-per-key] --reason TEXT",
		Short: "Re-send stored events of a time window to the pipeline (the CRM dedupes by event id; audited)",
		Long: "Reads the events stream from the first event stored at or after --since up to --until (or the\n" +
			"end of the stream when the replay starts) and re-publishes each event, in stream order, with a\n" +
			"new message id and the same envelope, so the CRM's Idempotency-Key (the event id) is unchanged.\n" +
			"--latest-per-key sends only each key's newest event per type (a CRM that ignores the\n" +
			"Idempotency-Key applies every copy as a real update and fires a webhook for each).\n" +
			"TIME is RFC 3339 (2026-01-02T15:04:05Z) or a duration ago (90m).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if strings.TrimSpace(o.Reason) == "" {
				return errors.New("--reason is required (it is recorded in the audit)")
			}
			now := time.Now()
			var err error
			if o.Since, err = parseWhen(since, now); err != nil {
				return fmt.Errorf("--since: %w", err)
			}
			if until != "" {
				if o.Until, err = parseWhen(until, now); err != nil {
					return fmt.Errorf("--until: %w", err)
				}
			}
			c, err := LoadConfig(cfgPath, "all")
			if err != nil {
				return err
			}
			nc, js, err := connectCLI(c, "replay")
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx, stop := signalContext()
			defer stop()
			out := cmd.OutOrStdout()
			o.Progress = func(n int, seq uint64) { fmt.Fprintf(out, "... %d event(s), at stream seq %d\n", n, seq) }
			res, err := Replay(ctx, js, topology.New(c.Topology), o)
			writeReplayResult(out, o, res)
			if err == nil && !res.Audited {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: no stream stores the audit subject; the audit record was not kept")
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "config", "c", "", "YAML config file (env SLUICE_* overrides it)")
	f.StringVar(&since, "since", "", "first event time: RFC 3339 or a duration ago (required)")
	f.StringVar(&until, "until", "", "last event time: RFC 3339 or a duration ago (default: now)")
	f.StringVar(&o.Type, "type", "", "only events of this type")
	f.StringVar(&o.Key, "key", "", "only events of this key")
	f.StringVar(&o.Reason, "reason", "", "why the events are re-sent (required, audited)")
	f.StringVar(&o.By, "by", os.Getenv("USER"), "who replays (audited)")
	f.BoolVar(&o.DryRun, "dry-run", false, "count the events only; publish nothing")
	f.BoolVar(&o.LatestPerKey, "latest-per-key", false, "re-send only the newest event of each key and type in the window (its latest state)")
	f.IntVar(&o.ProgressEvery, "progress", 1000, "print progress every N events (0: never)")
	_ = cmd.MarkFlagRequired("since")
	return cmd
}

func writeReplayResult(w io.Writer, o ReplayOptions, res ReplayResult) {
	verb := "replayed"
	if o.DryRun {
		verb = "dry run: would replay"
	}
	fmt.Fprintf(w, "%s %d event(s)", verb, res.Count)
	if res.Count > 0 {
		fmt.Fprintf(w, " (stream seq %d..%d)", res.FirstSeq, res.LastSeq)
	}
	if res.Skipped > 0 {
		fmt.Fprintf(w, ", %d older event(s) of the same keys skipped (--latest-per-key)", res.Skipped)
	}
	fmt.Fprintf(w, "; run %s\n", res.RunID)
}
