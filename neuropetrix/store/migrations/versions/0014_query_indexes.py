"""indexes on the keys a C-FIND narrows on: patient name, study date, accession number, modality

Revision ID: 0014
Revises: 0004
"""
from alembic import op

revision = '0014'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_patients_name', 'patients', ['name'])
    op.create_index('ix_studies_study_date', 'studies', ['study_date'])
    op.create_index('ix_studies_accession_number', 'studies', ['accession_number'])
    op.create_index('ix_series_modality', 'series', ['modality'])


def downgrade() -> None:
    op.drop_index('ix_series_modality', table_name='series')
    op.drop_index('ix_studies_accession_number', table_name='studies')
    op.drop_index('ix_studies_study_date', table_name='studies')
    op.drop_index('ix_patients_name', table_name='patients')
