-- The group's last delivered message id (`0-0` before any).
return last_delivered() or '0-0'
