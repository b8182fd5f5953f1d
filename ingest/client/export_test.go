package client

// LockedKeys is the number of keys locked or waited for (0 when idle).
func LockedKeys(c *Client) int { return c.locks.size() }

// DecodeReply exposes the HTTP reply decoder to the fuzz test.
var DecodeReply = decodeReply

// Waiting is the number of callers queued behind key.
func Waiting(c *Client, key string) int {
	c.locks.mu.Lock()
	defer c.locks.mu.Unlock()
	if l := c.locks.keys[key]; l != nil {
		return len(l.waiters)
	}
	return 0
}
