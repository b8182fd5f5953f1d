//go:build unix

package meshtest

import (
	"os"
	"syscall"
)

// lockPort takes an exclusive, non-blocking flock on path. The lock belongs
// to the open file: a second lockPort of the same path fails, in this
// process or another, until unlock (or the process's exit) releases it.
func lockPort(path string) (unlock func(), ok bool) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return func() { f.Close() }, true
}
