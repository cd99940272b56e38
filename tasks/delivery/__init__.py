"""Delivery of notifications by email and Web Push, one message per settled batch, and digests.

planning.py turns settled notifications into ``deliveries`` rows and claims the
due ones; sending.py runs one delivery (mark SENDING, hand over, record);
digests.py builds the daily/weekly digests; transports.py speaks SMTP and Web
Push; rendering.py builds the messages; policy.py holds the rules as plain
functions; tasks.py is the thin Celery layer.
"""
