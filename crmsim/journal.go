package crmsim

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// journal keeps the records the simulator created in a file (one JSON
// line per create: CRM id and Idempotency-Key), written before the create
// is answered, so a restarted simulator still knows every id it handed
// out: a client that stored one (the dispatcher's CRM id map) can update
// it after the restart, and a retried create gets the same id back.
// Only the default profile journals.
type journal struct {
	f *os.File
}

type journalLine struct {
	ID  string `json:"id"`
	Key string `json:"key,omitempty"`
}

// openJournal reads path into st (creating the file when missing) and
// opens it for appending. A torn last line (a kill mid-write) is skipped.
func openJournal(path string, st *state) (*journal, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("simulator.state_file: %w", err)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l journalLine
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.ID == "" {
			continue
		}
		st.created[l.ID] = struct{}{}
		if l.Key != "" {
			st.idem[l.Key] = l.ID
		}
		if i := strings.LastIndexByte(l.ID, '-'); i > 0 {
			if n, err := strconv.Atoi(l.ID[i+1:]); err == nil && n > st.seq[l.ID[:i]] {
				st.seq[l.ID[:i]] = n
			}
		}
	}
	if err := sc.Err(); err != nil {
		f.Close()
		return nil, fmt.Errorf("simulator.state_file: read %s: %w", path, err)
	}
	return &journal{f: f}, nil
}

// add appends one create; it is in the file (the OS's page cache) when add
// returns, so a kill of the process does not lose it.
func (j *journal) add(crmID, key string) error {
	b, _ := json.Marshal(journalLine{ID: crmID, Key: key})
	_, err := j.f.Write(append(b, '\n'))
	return err
}

// truncate forgets every create (Reset).
func (j *journal) truncate() error {
	return j.f.Truncate(0)
}

func (j *journal) close() error { return j.f.Close() }
