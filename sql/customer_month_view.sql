-- The customer monthly snapshot with the customer's RM (for RM productivity) and AUM tier at that
-- month end: mass below 500k CNY, affluent from 500k, private banking from 6M (the usual
-- thresholds of Chinese retail banks).
SELECT
    s.customer_id,
    s.month_end,
    s.aum,
    s.deposit_balance,
    s.status,
    c.rm_id,
    CASE
        WHEN s.aum >= 6000000 THEN 'private'
        WHEN s.aum >= 500000 THEN 'affluent'
        ELSE 'mass'
    END AS tier
FROM customer_month_snapshots s
LEFT JOIN customers c ON s.customer_id = c.customer_id
