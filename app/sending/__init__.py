"""What every writer shares about sending, below the domains and the worker: the status
rules (`status`), what providers' answers mean (`outcomes`), the failed reasons
(`reasons`), message rendering (`message`), the retry schedule and policy (`schedule`,
`policy`), the one function that writes a recipient's state (`state`), and the lock
order (`locks`). Pure, except `locks`."""
