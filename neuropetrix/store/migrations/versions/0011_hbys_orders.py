"""HBYS intake: patients and orders from HL7, received messages with their ACKs, study ↔ order

Revision ID: 0011
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('hbys_patients',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('issuer', sa.String(length=64), nullable=False),
    sa.Column('identifier_type', sa.String(length=16), nullable=False),
    sa.Column('identifiers', sa.JSON(), nullable=False),
    sa.Column('name', sa.String(length=324), nullable=False),
    sa.Column('birth_date', sa.String(length=8), nullable=False),
    sa.Column('sex', sa.String(length=16), nullable=False),
    sa.Column('merged_into', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['merged_into'], ['hbys_patients.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('patient_id', 'issuer', name='uq_hbys_patient_identity')
    )
    op.create_table('hl7_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.Column('peer', sa.String(length=64), nullable=False),
    sa.Column('sender', sa.String(length=200), nullable=False),
    sa.Column('control_id', sa.String(length=64), nullable=False),
    sa.Column('message_type', sa.String(length=32), nullable=False),
    sa.Column('charset', sa.String(length=32), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.Column('ack_code', sa.String(length=2), nullable=False),
    sa.Column('ack', sa.Text(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('duplicate_of', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('hl7_messages', schema=None) as batch_op:
        batch_op.create_index('ix_hl7_messages_control', ['sender', 'control_id'], unique=False)

    op.create_table('orders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('placer_number', sa.String(length=64), nullable=False),
    sa.Column('placer_authority', sa.String(length=64), nullable=False),
    sa.Column('filler_number', sa.String(length=64), nullable=False),
    sa.Column('accession_number', sa.String(length=16), nullable=False),
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('requested_procedure_id', sa.String(length=16), nullable=False),
    sa.Column('sps_id', sa.String(length=16), nullable=False),
    sa.Column('procedure_code', sa.String(length=64), nullable=False),
    sa.Column('procedure_text', sa.String(length=200), nullable=False),
    sa.Column('procedure_system', sa.String(length=20), nullable=False),
    sa.Column('sut_code', sa.String(length=64), nullable=False),
    sa.Column('sut_text', sa.String(length=200), nullable=False),
    sa.Column('ordering_physician', sa.String(length=324), nullable=False),
    sa.Column('referring_physician', sa.String(length=324), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=False),
    sa.Column('station_ae', sa.String(length=16), nullable=False),
    sa.Column('scheduled_start', sa.String(length=14), nullable=False),
    sa.Column('admission_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('hl7_version', sa.String(length=8), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['patient_pk'], ['hbys_patients.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('placer_number', 'placer_authority', name='uq_order_placer')
    )
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_orders_accession_number'), ['accession_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_orders_patient_pk'), ['patient_pk'], unique=False)
        batch_op.create_index('ix_orders_status_start', ['status', 'scheduled_start'], unique=False)
        batch_op.create_index(batch_op.f('ix_orders_study_uid'), ['study_uid'], unique=False)

    op.create_table('study_orders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('order_pk', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('matched_by', sa.String(length=32), nullable=False),
    sa.Column('differences', sa.JSON(), nullable=False),
    sa.Column('held', sa.Integer(), nullable=False),
    sa.Column('resolved_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['order_pk'], ['orders.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('study_uid')
    )
    with op.batch_alter_table('study_orders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_study_orders_order_pk'), ['order_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_study_orders_state'), ['state'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('study_orders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_study_orders_state'))
        batch_op.drop_index(batch_op.f('ix_study_orders_order_pk'))

    op.drop_table('study_orders')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_orders_study_uid'))
        batch_op.drop_index('ix_orders_status_start')
        batch_op.drop_index(batch_op.f('ix_orders_patient_pk'))
        batch_op.drop_index(batch_op.f('ix_orders_accession_number'))

    op.drop_table('orders')
    with op.batch_alter_table('hl7_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_hl7_messages_control')

    op.drop_table('hl7_messages')
    op.drop_table('hbys_patients')
