-- Whether the consumer group exists: 1 or 0.
return last_delivered() and 1 or 0
