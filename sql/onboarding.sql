-- Each customer with the first contact by the bank after opening (null: not contacted yet):
-- the "new customer not contacted within 24 hours" rule reads it.
SELECT
    c.customer_id,
    c.segment,
    c.opened_on,
    c.rm_id,
    min(k.contacted_at) AS first_contact_at
FROM customers c
LEFT JOIN contacts k ON k.customer_id = c.customer_id
GROUP BY c.customer_id, c.segment, c.opened_on, c.rm_id
