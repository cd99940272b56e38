"""The social graph of mini-Facebook (seed 004): friendships, conversations and their side effects."""
